//! Unit tests of membership: a few [`Membership`] instances driven by hand (quinn-proto's
//! `Pair` style). [`Mesh`] owns the instances, a clock and the connections between them;
//! every output is delivered to the other end in order (no latency), dials connect at once,
//! and a `Disconnect` is fed back to its side as `peer_down` as the shell does. Tests may
//! edit [`Mesh::queue`] to drop or reorder what is in flight.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::rng::Rng;
use crate::sim::{addr_of, node_id};
use crate::wire::{MembershipMsg, PeerInfo};

type Conn = u64;

#[derive(Debug)]
enum Ev {
    Up {
        conn: Conn,
        peer: usize,
        outbound: bool,
    },
    Down(Conn),
    Msg(Conn, MembershipMsg),
    DialFailed(SocketAddr),
}

struct Mesh {
    now: Instant,
    nodes: Vec<Membership<Conn>>,
    rngs: Vec<Rng>,
    /// Connection → (dialer, target, up).
    conns: BTreeMap<Conn, (usize, usize, bool)>,
    next_conn: Conn,
    queue: VecDeque<(usize, Ev)>,
    /// Everything the nodes asked for, in order.
    log: Vec<(usize, MOut<Conn>)>,
    offline: BTreeSet<usize>,
}

fn cfg(contacts: &[usize]) -> MembershipConfig {
    MembershipConfig {
        active_size: 3,
        passive_size: 8,
        arwl: 1,
        prwl: 1,
        join_contacts: 1,
        probe_chance: 0.0,
        contacts: contacts.iter().map(|c| addr_of(*c)).collect(),
        ..MembershipConfig::default()
    }
}

fn info(i: usize) -> PeerInfo {
    PeerInfo {
        node: node_id(i),
        addr: addr_of(i),
    }
}

impl Mesh {
    fn new(cfgs: Vec<MembershipConfig>) -> Self {
        let nodes = cfgs
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                c.advertise = Some(addr_of(i));
                Membership::new(node_id(i), c)
            })
            .collect::<Vec<_>>();
        Mesh {
            now: Instant::now(),
            rngs: (0..nodes.len()).map(|i| Rng::new(i as u64 + 7)).collect(),
            nodes,
            conns: BTreeMap::new(),
            next_conn: 1,
            queue: VecDeque::new(),
            log: Vec::new(),
            offline: BTreeSet::new(),
        }
    }

    fn start(&mut self, i: usize) {
        self.nodes[i].start(self.now, &mut self.rngs[i]);
        self.drain(i);
        self.run();
    }

    fn other(&self, conn: Conn, me: usize) -> usize {
        let (a, b, _) = self.conns[&conn];
        if a == me { b } else { a }
    }

    /// Opens a connection from `i` to `j` that neither asked for (a client link).
    fn connect(&mut self, i: usize, j: usize) -> Conn {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(conn, (i, j, true));
        self.queue.push_back((
            j,
            Ev::Up {
                conn,
                peer: i,
                outbound: false,
            },
        ));
        self.queue.push_back((
            i,
            Ev::Up {
                conn,
                peer: j,
                outbound: true,
            },
        ));
        conn
    }

    fn drain(&mut self, i: usize) {
        while let Some(o) = self.nodes[i].poll() {
            match &o {
                MOut::Send(conn, msg) if self.conns[conn].2 => {
                    let to = self.other(*conn, i);
                    self.queue.push_back((to, Ev::Msg(*conn, msg.clone())));
                }
                MOut::Dial(addr) => {
                    let target = (0..self.nodes.len())
                        .find(|j| addr_of(*j) == *addr && !self.offline.contains(j));
                    match target {
                        Some(j) => {
                            let conn = self.next_conn;
                            self.next_conn += 1;
                            self.conns.insert(conn, (i, j, true));
                            self.queue.push_back((
                                j,
                                Ev::Up {
                                    conn,
                                    peer: i,
                                    outbound: false,
                                },
                            ));
                            self.queue.push_back((
                                i,
                                Ev::Up {
                                    conn,
                                    peer: j,
                                    outbound: true,
                                },
                            ));
                        }
                        None => self.queue.push_back((i, Ev::DialFailed(*addr))),
                    }
                }
                MOut::Disconnect(conn, _) => {
                    let conn = *conn;
                    if let Some(c) = self.conns.get_mut(&conn)
                        && c.2
                    {
                        c.2 = false;
                        let to = self.other(conn, i);
                        self.queue.push_back((to, Ev::Down(conn)));
                    }
                    self.log.push((i, o));
                    self.nodes[i].peer_down(self.now, &mut self.rngs[i], conn);
                    continue;
                }
                _ => {}
            }
            self.log.push((i, o));
        }
    }

    fn step(&mut self) -> bool {
        let Some((i, ev)) = self.queue.pop_front() else {
            return false;
        };
        if self.offline.contains(&i) {
            return true;
        }
        let (now, rng) = (self.now, &mut self.rngs[i]);
        let n = &mut self.nodes[i];
        match ev {
            Ev::Up {
                conn,
                peer,
                outbound,
            } => n.peer_up(now, rng, conn, node_id(peer), addr_of(peer), outbound),
            Ev::Down(conn) => n.peer_down(now, rng, conn),
            Ev::Msg(conn, msg) => {
                if self.conns[&conn].2 {
                    n.on_message(now, rng, conn, msg);
                }
            }
            Ev::DialFailed(addr) => n.dial_failed(now, rng, addr),
        }
        self.drain(i);
        true
    }

    fn run(&mut self) {
        let mut steps = 0;
        while self.step() {
            steps += 1;
            assert!(steps < 100_000, "no quiet point: the nodes loop");
        }
    }

    /// Moves the clock by `d`, firing every timer due on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.run();
            let next = (0..self.nodes.len())
                .filter(|i| !self.offline.contains(i))
                .filter_map(|i| self.nodes[i].poll_timeout().map(|t| (t, i)))
                .min();
            match next {
                Some((t, i)) if t <= end => {
                    self.now = self.now.max(t);
                    self.nodes[i].on_timeout(self.now, &mut self.rngs[i]);
                    self.drain(i);
                }
                _ => break,
            }
        }
        self.now = end;
    }

    /// Moves the clock to `i`'s next timer and fires it (only `i`'s).
    fn fire(&mut self, i: usize) {
        let t = self.nodes[i].poll_timeout().expect("a timer");
        self.now = self.now.max(t);
        self.nodes[i].on_timeout(self.now, &mut self.rngs[i]);
        self.drain(i);
        self.run();
    }

    /// The nodes in `i`'s active view.
    fn active(&self, i: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self.nodes[i]
            .active()
            .iter()
            .map(|c| self.other(*c, i))
            .collect();
        v.sort();
        v
    }

    fn conn(&self, i: usize, j: usize) -> Conn {
        *self
            .conns
            .iter()
            .rev()
            .find(|(_, (a, b, up))| *up && ((*a, *b) == (i, j) || (*a, *b) == (j, i)))
            .expect("a connection")
            .0
    }

    fn disconnects(&self, i: usize) -> Vec<String> {
        self.log
            .iter()
            .filter(|(n, _)| *n == i)
            .filter_map(|(_, o)| match o {
                MOut::Disconnect(_, r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    fn dialled(&self, i: usize, j: usize) -> usize {
        let addr = addr_of(j);
        self.log
            .iter()
            .filter(|(n, o)| *n == i && *o == MOut::Dial(addr))
            .count()
    }

    fn assert_symmetric(&self) {
        for i in (0..self.nodes.len()).filter(|i| !self.offline.contains(i)) {
            for j in self.active(i) {
                assert!(self.active(j).contains(&i), "{i} has {j}, not back");
            }
        }
    }
}

/// `n`'s join lands it in the contact's view and, through the contact's `ForwardJoin`
/// walks, in the view of a node it never dialled.
#[test]
fn join_and_forward_join_walks_take_the_newcomer_in() {
    let mut m = Mesh::new(vec![cfg(&[]), cfg(&[0]), cfg(&[0]), cfg(&[0])]);
    for i in 0..3 {
        m.start(i);
    }
    assert_eq!(m.active(0), vec![1, 2]);
    m.start(3);
    let walks = m
        .log
        .iter()
        .filter(|(n, o)| *n == 0 && matches!(o, MOut::Send(_, MembershipMsg::ForwardJoin { .. })))
        .count();
    assert_eq!(
        walks,
        2 + 1,
        "one walk per other active peer, for 2 then for 3"
    );
    assert!(m.active(0).contains(&3));
    let beyond: Vec<usize> = m.active(3).into_iter().filter(|p| *p != 0).collect();
    assert!(
        !beyond.is_empty(),
        "a walk's end took 3 in: {:?}",
        m.active(3)
    );
    assert_eq!(
        m.dialled(3, beyond[0]),
        0,
        "3 never dialled it: the walk's end did"
    );
    m.assert_symmetric();
}

/// A full view declines a low-priority request; the asker closes the link and does not ask
/// that node again until the cool-down is over (without it, two nodes could ask and decline
/// each other in a tight loop).
#[test]
fn a_declined_neighbour_request_is_not_repeated_within_the_cool_down() {
    let mut small = cfg(&[]);
    small.active_size = 1;
    // 0: full (1 joined it). 2: neighbours 3 and 4 (4's join walk ended at 3).
    let mut m = Mesh::new(vec![small, cfg(&[0]), cfg(&[]), cfg(&[2]), cfg(&[2])]);
    for i in 0..5 {
        m.start(i);
    }
    assert_eq!(m.active(0), vec![1]);
    assert_eq!(m.active(2), vec![3, 4]);
    // 2 learns of 0 (a passive entry), then loses 4: it refills with a low-priority request.
    let client = m.connect(1, 2);
    m.run();
    let peers = vec![info(0)];
    m.queue
        .push_back((2, Ev::Msg(client, MembershipMsg::ShuffleReply { peers })));
    m.run();
    let c4 = m.conn(2, 4);
    m.conns.get_mut(&c4).unwrap().2 = false;
    m.queue.push_back((2, Ev::Down(c4)));
    let before = m.log.len();
    m.run();
    let asked = m.log[before..].iter().any(|(n, o)| {
        *n == 2
            && matches!(
                o,
                MOut::Send(
                    _,
                    MembershipMsg::Neighbor {
                        high_priority: false,
                        ..
                    }
                )
            )
    });
    assert!(
        asked,
        "a view that is short but not empty asks with low priority"
    );
    let declined = m.log[before..].iter().any(|(n, o)| {
        *n == 0
            && matches!(
                o,
                MOut::Send(_, MembershipMsg::NeighborReply { accepted: false })
            )
    });
    assert!(declined, "0 is full and the request was not high priority");
    assert_eq!(m.active(0), vec![1], "a full view does not change for it");
    assert!(
        m.disconnects(2)
            .contains(&"neighbour request declined".to_string())
    );
    // The refill after the declined link closed asks nobody (0 and 4 cool down).
    assert_eq!(m.dialled(2, 0), 1, "asked again at once");
    assert_eq!(m.dialled(2, 4), 0);
    let until = m.nodes[2].cooling[&node_id(0)];
    assert_eq!(until, m.now + m.nodes[2].cfg.shuffle_interval);
    // After the cool-down, the next refill asks 0 again.
    m.now = until;
    m.nodes[2].refill(m.now, &mut m.rngs[2]);
    m.drain(2);
    assert_eq!(m.dialled(2, 0), 2, "asked again after the cool-down");
}

/// A high-priority request (the asker has nobody) is accepted by a full view, which evicts a
/// member and tells it why.
#[test]
fn a_high_priority_request_evicts_from_a_full_view() {
    let mut small = cfg(&[]);
    small.active_size = 1;
    let mut m = Mesh::new(vec![small, cfg(&[0]), cfg(&[])]);
    m.start(0);
    m.start(1);
    let c = m.connect(2, 0);
    m.run();
    m.queue.push_back((
        0,
        Ev::Msg(
            c,
            MembershipMsg::Neighbor {
                high_priority: true,
                addr: None,
            },
        ),
    ));
    m.run();
    assert_eq!(m.active(0), vec![2]);
    assert!(
        m.disconnects(0)
            .contains(&"evicted from a full active view".to_string())
    );
    assert!(m.nodes[0].passive.iter().any(|p| p.node == node_id(1)));
    assert!(!m.active(1).contains(&0));
}

/// A shuffle sends a sample of the views to a neighbour, which answers from its passive view
/// and keeps what it was sent.
#[test]
fn a_shuffle_swaps_passive_entries() {
    let mut m = Mesh::new(vec![cfg(&[]), cfg(&[0]), cfg(&[])]);
    m.start(0);
    m.start(1);
    let c = m.connect(2, 0);
    m.run();
    let far = [info(7), info(8)];
    m.queue.push_back((
        0,
        Ev::Msg(
            c,
            MembershipMsg::ShuffleReply {
                peers: far.to_vec(),
            },
        ),
    ));
    m.run();
    assert_eq!(m.nodes[0].passive_len(), 2);
    assert_eq!(m.nodes[1].passive_len(), 0);
    m.fire(0);
    let shuffled = m.log.iter().any(|(n, o)| {
        *n == 0 && matches!(o, MOut::Send(_, MembershipMsg::Shuffle { peers }) if peers.contains(&far[0]))
    });
    assert!(
        shuffled,
        "0 shuffled its passive entries with its neighbour"
    );
    for p in far {
        assert!(m.nodes[1].passive.contains(&p), "1 keeps {p:?}");
    }
    assert!(
        m.log
            .iter()
            .any(|(n, o)| *n == 1 && matches!(o, MOut::Send(_, MembershipMsg::ShuffleReply { .. }))),
        "1 answered"
    );
}

/// A neighbour that goes away is replaced from the passive view (not by the one that left,
/// which cools down), with a high-priority request since the view is empty.
#[test]
fn a_lost_neighbour_is_replaced_from_the_passive_view() {
    let mut m = Mesh::new(vec![cfg(&[]), cfg(&[0]), cfg(&[])]);
    m.start(0);
    m.start(1);
    m.start(2);
    let c = m.connect(2, 1);
    m.run();
    m.queue.push_back((
        1,
        Ev::Msg(
            c,
            MembershipMsg::ShuffleReply {
                peers: vec![info(2)],
            },
        ),
    ));
    m.run();
    m.queue.push_back((1, Ev::Down(c)));
    m.run();
    assert_eq!(m.active(1), vec![0]);
    // 0 crashes: 1 hears its link drop.
    m.offline.insert(0);
    let c0 = m.conn(0, 1);
    m.conns.get_mut(&c0).unwrap().2 = false;
    m.queue.push_back((1, Ev::Down(c0)));
    let before = m.log.len();
    m.run();
    assert_eq!(m.active(1), vec![2], "refilled from the passive view");
    let redial = m.log[before..].contains(&(1, MOut::Dial(addr_of(0))));
    assert!(!redial, "the node that left cools down");
    let high = m.log[before..].iter().any(|(n, o)| {
        *n == 1
            && matches!(
                o,
                MOut::Send(
                    _,
                    MembershipMsg::Neighbor {
                        high_priority: true,
                        ..
                    }
                )
            )
    });
    assert!(high, "an empty view asks with high priority");
    m.assert_symmetric();
}

/// Two nodes that dial each other at once keep one link, the one the smaller id dialled, on
/// both sides.
#[test]
fn simultaneous_dials_keep_the_link_of_the_smaller_dialer() {
    let mut m = Mesh::new(vec![cfg(&[1]), cfg(&[0])]);
    m.nodes[0].start(m.now, &mut m.rngs[0]);
    m.nodes[1].start(m.now, &mut m.rngs[1]);
    m.drain(0);
    m.drain(1);
    m.run();
    assert!(node_id(0) < node_id(1));
    let up: Vec<Conn> = m
        .conns
        .iter()
        .filter(|(_, c)| c.2)
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(up.len(), 1, "one link left: {:?}", m.conns);
    assert_eq!(m.conns[&up[0]].0, 0, "the one node 0 dialled");
    assert_eq!(m.nodes[0].active(), &up[..]);
    assert_eq!(m.nodes[1].active(), &up[..]);
    assert!(
        m.disconnects(0)
            .contains(&"duplicate connection".to_string())
    );
}

/// A peer that dials again long after its first link (it restarted) replaces the stale link
/// at once: the node treats it as a fresh neighbour and probes it.
#[test]
fn a_peer_that_comes_back_replaces_its_stale_link() {
    let mut m = Mesh::new(vec![cfg(&[]), cfg(&[0])]);
    m.start(0);
    m.start(1);
    let old = m.conn(0, 1);
    m.advance(Duration::from_secs(6));
    // 1 restarts: a new instance with the same id dials 0; 0 never heard the old link drop.
    m.conns.get_mut(&old).unwrap().2 = false;
    let mut c = cfg(&[0]);
    c.advertise = Some(addr_of(1));
    m.nodes[1] = Membership::new(node_id(1), c);
    m.log.clear();
    m.start(1);
    let new = m.conn(0, 1);
    assert_ne!(new, old);
    let outs: Vec<&MOut<Conn>> = m
        .log
        .iter()
        .filter(|(n, _)| *n == 0)
        .map(|(_, o)| o)
        .collect();
    assert!(outs.contains(&&MOut::Replaced {
        old,
        new,
        fresh: true
    }));
    assert!(outs.contains(&&MOut::Disconnect(old, "duplicate connection".into())));
    assert!(
        outs.contains(&&MOut::Probe(new)),
        "it may have missed heads"
    );
    assert_eq!(m.nodes[0].active(), &[new]);
    assert_eq!(m.nodes[0].links(), 1);
}
