use std::path::PathBuf;

use fleetcast_protocol::{DEFAULT_CHUNK_SIZE, HeadKind, Release, RunPolicy};

use fleetcast_protocol::wire::Position;

use std::time::Duration;

use fleetcast_protocol::rollout;

use super::drive::{self, Drive};
use super::publish::{
    Opened, PushArgs, PushOutcome, SignArgs, already_active, app_name, build_head, next_position,
    open_at, push_signed, read_key,
};
use crate::error::{CliError, Result};
use crate::headfile::{HeadFile, relative_component};
use crate::json::{self, Event};
use crate::out::{Out, OutArgs};
use crate::plan::{self, Direction, Plan, Push};
use crate::signing::{self, Signers};
use crate::target::{LIBRARY_CONNECT_TIMEOUT, OptTargetArgs, Target};

/// Sign a component as the next release of an app and send it into the mesh.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "A version names one set of bytes: releasing a version again with other bytes is refused (exit 2); the same bytes as an earlier version under a new one are allowed; releasing exactly what is active does nothing (exit 0).\n\nUnder a fleet root a head needs the release threshold of distinct release keys: give them all (--key, repeatable), or sign in turn: --sign-only --out FILE writes a head file with the first signatures, `fleetcast sign FILE --key ...` adds more, `fleetcast push FILE` sends it. The seq and epoch come from the agent (--peer), or from --seq and --epoch (or --fleet DIR's root) without one.\n\nExamples:\n  fleetcast release hello.wasm --app hello --version 1.0.0 --key ops.key --peer 127.0.0.1:7401 --wait\n  fleetcast release app.wasm --app shop --version 1.0.0 --fleet fleet --key fleet/keys/release-1.key --key fleet/keys/release-2.key --peer 127.0.0.1:7401\n  fleetcast release app.wasm --app shop --version 1.0.1 --fleet fleet --key fleet/keys/release-1.key --sign-only --out shop-1.0.1.head --peer 127.0.0.1:7401\n  fleetcast release app.wasm --app shop --version 1.0.2 --fleet fleet --key fleet/keys/release-1.key --sign-only --out shop-1.0.2.head --seq 3   # offline: seq given, epoch from fleet/root.json\n\nStaged (--waves): the first wave's head carries the signed plan; this process follows each wave (live view: one line per wave), opens the next when the gates pass (a new head per wave, signed with the same --key set), and halts on a failing gate: a signed rollback to the release before, exit 5. Exit 0: promoted to 100%. Exit 6: someone paused, aborted or replaced the rollout meanwhile. If this process dies the fleet stays at its wave: `fleetcast rollout resume` goes on from any machine with the keys. With --sign-only the head file carries the plan and nothing is driven.\n  fleetcast release shop.wasm --app shop --version 1.5.0 --key ops.key --peer 127.0.0.1:7401 --waves 1%,10%,50%,100% --bake 60s --max-failed 0 --max-error-rate +1%\n  fleetcast release shop.wasm --app shop --version 1.5.1 --key ops.key --peer 127.0.0.1:7401 --waves 5%,100% --bake 2m --max-p99-increase +50% --min-requests 1000 --json"
)]
pub struct ReleaseFlags {
    /// Release a version lower than the one the peer agent serves (to go back to a version in
    /// the history, `fleetcast rollback --to V` moves no content).
    #[arg(long, display_order = 1000)]
    pub allow_downgrade: bool,
    #[command(flatten)]
    pub cmd: ReleaseCmd,
    #[command(flatten)]
    pub waves: crate::rollout::WaveArgs,
    #[command(flatten)]
    pub sign: SignArgs,
    #[command(flatten)]
    pub offline: SignOnlyArgs,
    #[command(flatten)]
    pub target: OptTargetArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

/// Signing without pushing.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Signing in turn")]
pub struct SignOnlyArgs {
    /// Sign and write a head file (--out) instead of pushing: other key holders add their
    /// signatures with `fleetcast sign`, and `fleetcast push` sends it.
    #[arg(long, requires = "out")]
    pub sign_only: bool,
    /// Where --sign-only writes the head file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
    /// The seq to sign (with --sign-only and no --peer); default: one above what the agent
    /// holds.
    #[arg(long, requires = "sign_only")]
    pub seq: Option<u64>,
    /// The epoch to sign under (with --seq); default: --fleet DIR's root epoch.
    #[arg(long, requires = "seq")]
    pub epoch: Option<u64>,
}

impl ReleaseFlags {
    pub async fn execute(self) -> Result<()> {
        let out = Out::new(self.out.json);
        let staged = self.waves.plan()?;
        let signers = self.sign.signers()?;
        let mut cmd = self.cmd;
        self.sign.apply(&mut cmd.push, &signers);
        if self.offline.sign_only {
            let target = match &self.target.peer {
                Some(_) if self.offline.seq.is_none() => {
                    Some(Target::from_args(&self.target.required("--sign-only")?).await?)
                }
                _ => None,
            };
            return cmd
                .sign_only(
                    target.as_ref(),
                    &self.offline,
                    self.allow_downgrade,
                    &signers,
                    staged,
                    &out,
                )
                .await;
        }
        let target = Target::from_args(&self.target.required("release")?).await?;
        if let Some(plan) = staged {
            return cmd
                .run_staged(&target, self.allow_downgrade, &signers, plan, &out)
                .await;
        }
        cmd.run_with(&target, self.allow_downgrade, &signers, &out)
            .await
            .map(|_| ())
    }
}

/// The release command's own flags (what library callers build).
#[derive(clap::Args, Debug)]
pub struct ReleaseCmd {
    /// The wasi:http component (.wasm).
    pub file: PathBuf,
    /// App name (a DNS label; agents route by the first label of the Host header).
    #[arg(long)]
    pub app: String,
    /// Version (semver, e.g. 1.4.0).
    #[arg(long)]
    pub version: String,
    #[command(flatten)]
    pub push: PushArgs,
    /// Chunk size in bytes.
    #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
    pub chunk_size: u32,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// How agents run and judge the release (signed with it). Limits can only tighten what each
/// agent allows.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "How agents run and judge the release (signed with it)")]
pub struct PolicyArgs {
    /// Health path: before swapping, each agent sends one GET there and requires a 2xx.
    #[arg(long)]
    pub health_path: Option<String>,
    /// The trial (traps, timeouts, 5xx rate watched; failure reverts) passes after this many
    /// requests on an agent...
    #[arg(long)]
    pub trial_requests: Option<u32>,
    /// ...or after this many seconds, whichever comes first.
    #[arg(long)]
    pub trial_secs: Option<u32>,
    /// Linear memory per instance, MiB.
    #[arg(long)]
    pub max_memory_mib: Option<u32>,
    /// Deadline per request, milliseconds.
    #[arg(long)]
    pub request_timeout_ms: Option<u32>,
    /// Fuel per request (on agents that meter fuel).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Concurrent requests per agent; more get 503.
    #[arg(long)]
    pub max_concurrent: Option<u32>,
    /// Largest request body, bytes; larger gets 413.
    #[arg(long)]
    pub max_body_bytes: Option<u64>,
}

impl PolicyArgs {
    pub fn policy(&self) -> RunPolicy {
        RunPolicy {
            health_path: self.health_path.clone(),
            trial_requests: self.trial_requests,
            trial_secs: self.trial_secs,
            max_memory_mib: self.max_memory_mib,
            request_timeout_ms: self.request_timeout_ms,
            fuel: self.fuel,
            max_concurrent: self.max_concurrent,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

impl ReleaseCmd {
    /// For library callers: to `push.peer`, human output, no downgrade.
    pub async fn execute(self) -> anyhow::Result<PushOutcome> {
        let target = Target::addr(self.push.peer, LIBRARY_CONNECT_TIMEOUT);
        Ok(self.run(&target, false, &Out::human()).await?)
    }

    /// Checks the file and the version locally and against the peer's history, then signs
    /// (with `push.key`), pushes and follows the release.
    pub async fn run(
        self,
        target: &Target,
        allow_downgrade: bool,
        out: &Out,
    ) -> Result<PushOutcome> {
        let signers = Signers {
            keys: vec![read_key(&self.push)?],
            root: None,
        };
        self.run_with(target, allow_downgrade, &signers, out).await
    }

    /// The release to sign: the file checked as a component, its chunk map and policy.
    fn build(&self) -> Result<(Release, Vec<u8>)> {
        let app = app_name(&self.app)?;
        let version: semver::Version = self.version.parse().map_err(|e| {
            CliError::usage(format!(
                "--version {:?} is not semver (like 1.4.0): {e}",
                self.version
            ))
        })?;
        let file = self.file.display();
        let wasm = std::fs::read(&self.file)
            .map_err(|e| CliError::usage(format!("cannot read {file}: {e}")))?;
        crate::validate::check_component(&wasm)
            .map_err(|why| CliError::usage(format!("{file} cannot be released: {why}")))?;
        let mut release = Release::build(app.clone(), version, &wasm, self.chunk_size)
            .map_err(|e| CliError::usage(format!("{file} cannot be released: {e}")))?;
        release.policy = self.policy.policy();
        release
            .check_shape()
            .map_err(|e| CliError::usage(format!("{e}; fix the flag")))?;
        Ok((release, wasm))
    }

    /// [`ReleaseCmd::run`], signed by every key of `signers`.
    pub async fn run_with(
        self,
        target: &Target,
        allow_downgrade: bool,
        signers: &Signers,
        out: &Out,
    ) -> Result<PushOutcome> {
        let (release, wasm) = self.build()?;
        let app = release.app.clone();
        let mut opened = open_at(target, &self.push, &app).await?;
        match plan::release(opened.current.as_ref(), release, allow_downgrade)? {
            Plan::AlreadyActive { message, .. } => {
                already_active(&self.push, opened, &message, out).await
            }
            Plan::Push(p) => {
                out.say(&p.message);
                opened.session.serve(p.release.clone(), wasm);
                push_signed(&self.push, opened, &p, HeadKind::Release, signers, out).await
            }
        }
    }

    /// `--waves`: checks and signs the first wave's head, counts the fleet (a census), pushes
    /// the head and drives the rollout ([`crate::commands::drive`]) to 100% or to a halt.
    pub async fn run_staged(
        self,
        target: &Target,
        allow_downgrade: bool,
        signers: &Signers,
        staged: rollout::Plan,
        out: &Out,
    ) -> Result<()> {
        let (release, wasm) = self.build()?;
        let app = release.app.clone();
        let opened = open_at(target, &self.push, &app).await?;
        let p = match plan::release(opened.current.as_ref(), release, allow_downgrade)? {
            Plan::AlreadyActive { message, .. } => {
                return already_active(&self.push, opened, &message, out)
                    .await
                    .map(|_| ());
            }
            Plan::Push(p) => *p,
        };
        out.say(&p.message);
        let pos = next_position(&opened, &app, signers)?;
        let trust = opened.status.trust.clone();
        // Signed (and its signatures counted) before anything is sent.
        let first = drive::sign(
            &opened.fleet,
            &p.release,
            HeadKind::Release,
            pos,
            Some(staged.clone()),
            signers,
            &trust,
        )?;
        let Opened {
            mut session,
            fleet,
            current,
            status,
            ..
        } = opened;
        let census = drive::count_fleet(&mut session, &status, out).await?;
        session.serve(p.release.clone(), wasm);
        let mut d = Drive {
            session,
            fleet,
            app,
            release: p.release.clone(),
            pos,
            epoch: pos.epoch,
            signers,
            trust,
            before: current.clone(),
            census,
            timeout: Duration::from_secs(self.push.timeout),
            out,
        };
        d.push(&first, current.as_ref().map(|a| &a.active), None)?;
        d.run(staged).await.map(|_| ())
    }

    /// `--sign-only`: signs the next head (position from the agent at `target`, or `--seq`)
    /// and writes it as a head file; nothing is pushed.
    pub async fn sign_only(
        self,
        target: Option<&Target>,
        flags: &SignOnlyArgs,
        allow_downgrade: bool,
        signers: &Signers,
        staged: Option<rollout::Plan>,
        out: &Out,
    ) -> Result<()> {
        let file = flags
            .out
            .clone()
            .ok_or_else(|| CliError::usage("--sign-only needs --out FILE"))?;
        let (release, _) = self.build()?;
        let app = release.app.clone();
        let (fleet, plan, pos, agent_trust) = match (flags.seq, target) {
            (Some(seq), _) => {
                let epoch = match (flags.epoch, &signers.root) {
                    (Some(e), _) => e,
                    (None, Some(r)) => r.root.epoch,
                    (None, None) => {
                        return Err(CliError::usage(
                            "--seq without --peer needs the epoch: --epoch N, or --fleet DIR (its root.json's epoch)",
                        ));
                    }
                };
                let fleet = self.push.fleet.clone().ok_or_else(|| {
                    CliError::usage(
                        "without --peer the fleet name is not known: pass --fleet DIR or --fleet-name NAME",
                    )
                })?;
                if seq == 0 {
                    return Err(CliError::usage("--seq starts at 1"));
                }
                out.say(format!(
                    "signing {app} {} at seq {seq} (epoch {epoch}) as given: not checked against an agent's history",
                    release.version
                ));
                let plan = Push {
                    release,
                    from: None,
                    direction: Direction::Release,
                    same_bytes_as: None,
                    message: String::new(),
                };
                (fleet, plan, Position { epoch, seq }, None)
            }
            (None, Some(target)) => {
                let opened = open_at(target, &self.push, &app).await?;
                let plan = match plan::release(opened.current.as_ref(), release, allow_downgrade)? {
                    Plan::AlreadyActive { message, .. } => {
                        out.say(message);
                        return Ok(());
                    }
                    Plan::Push(p) => *p,
                };
                out.say(&plan.message);
                let pos = next_position(&opened, &app, signers)?;
                (
                    opened.fleet.clone(),
                    plan,
                    pos,
                    Some(opened.status.trust.clone()),
                )
            }
            (None, None) => {
                return Err(CliError::usage(
                    "--sign-only needs the seq to sign: --peer (the agent says), or --seq N",
                ));
            }
        };
        let mut unsigned = build_head(fleet, &plan, HeadKind::Release, pos);
        if let Some(p) = staged {
            out.say(format!(
                "the head carries the plan: {}; {}",
                p.describe(),
                crate::rollout::gates_line(&p.gates)
            ));
            unsigned.plan = Some(p);
        }
        let head = signing::sign_all(unsigned, &signers.keys);
        let count = signing::tally(&head, signers.root.as_ref(), agent_trust.as_ref());
        let hf = HeadFile::new(head, Some(relative_component(&file, &self.file)));
        hf.write(&file)?;
        say_signed(out, &file, &hf, &count);
        Ok(())
    }
}

/// The line and the `signed` event of a head file written.
pub fn say_signed(out: &Out, file: &std::path::Path, hf: &HeadFile, count: &signing::Count) {
    let h = &hf.head.head;
    let next = if count.complete() {
        format!("push it: fleetcast push {}", file.display())
    } else {
        format!(
            "another holder signs it: fleetcast sign {} --key ...",
            file.display()
        )
    };
    out.say(format!(
        "wrote {}: {} {} {} at seq {} (epoch {}), signatures {}; {next}",
        file.display(),
        h.kind,
        h.app,
        h.release.version,
        h.seq,
        h.epoch,
        count.describe()
    ));
    out.emit(Event::Signed(json::Signed {
        head_file: file.display().to_string(),
        app: h.app.to_string(),
        kind: h.kind.to_string(),
        seq: h.seq,
        epoch: h.epoch,
        release: (&h.release).into(),
        signatures: hf
            .head
            .signatures
            .iter()
            .map(|s| s.key.to_string())
            .collect(),
        have: count.have,
        need: count.need,
        complete: count.complete(),
    }));
}
