//! Fault-injecting `wasi:http/proxy` guest used by fleetcast's failure-path tests.
//!
//! Without a fault it answers exactly like `hello/`: every request gets `200`,
//! `x-hello-version: <version>`, `content-type: text/plain` and the body
//! `hello from fleetcast <version>\n`, except `GET /health` (query ignored), whose body is `ok\n`.
//!
//! The fault is chosen at compile time from the `FAULT` environment variable
//! (an unknown value is a compile error), the version from `HELLO_VERSION`:
//!
//! | `FAULT`       | behaviour |
//! | ------------- | --------- |
//! | unset         | none: identical to `hello` |
//! | `health-trap` | `GET /health` traps; everything else is normal |
//! | `crash`       | any request whose path starts with `/crash` traps; everything else (`/health` too) is normal |
//! | `spin`        | `GET /health` is normal; every other request loops forever without answering |
//! | `bomb`        | every request, `/health` included, allocates (and writes) 1 MiB blocks without bound until allocation fails, then traps |
//!
//! Every instance serves one request, so a guest cannot fail "on the Nth request";
//! a test that needs that sends a `/crash` request as its Nth.
//!
//! Like `hello`, the crate is `no_std` so that the component imports nothing outside
//! the `wasi:http/proxy` world.

#![no_std]

extern crate alloc;

use alloc::vec::Vec;

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

const VERSION: &str = match option_env!("HELLO_VERSION") {
    Some(v) => v,
    None => "0.0.0-dev",
};

/// The fault compiled into this build.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    HealthTrap,
    Crash,
    Spin,
    Bomb,
}

const FAULT: Fault = match option_env!("FAULT") {
    None => Fault::None,
    Some(f) if str_eq(f, "") || str_eq(f, "none") => Fault::None,
    Some(f) if str_eq(f, "health-trap") => Fault::HealthTrap,
    Some(f) if str_eq(f, "crash") => Fault::Crash,
    Some(f) if str_eq(f, "spin") => Fault::Spin,
    Some(f) if str_eq(f, "bomb") => Fault::Bomb,
    Some(_) => panic!("FAULT must be unset, none, health-trap, crash, spin or bomb"),
};

/// `a == b` in a const context.
const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// Canonical-ABI allocation hook the host calls to pass strings/lists in.
/// (With std, wasi-libc provides it; without std we must.)
///
/// # Safety
/// Called by the component runtime with the canonical ABI's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    use alloc::alloc::{Layout, alloc, realloc};
    if new_len == 0 {
        return align as *mut u8;
    }
    let ptr = unsafe {
        if old_len == 0 {
            alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            realloc(
                old_ptr,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        }
    };
    if ptr.is_null() {
        core::arch::wasm32::unreachable();
    }
    ptr
}

struct Faults;

wasip2::http::proxy::export!(Faults);

/// The request's path without its query string.
fn path_of(request: &IncomingRequest) -> Vec<u8> {
    let path_with_query = request.path_with_query().unwrap_or_default();
    path_with_query
        .split('?')
        .next()
        .unwrap_or("")
        .as_bytes()
        .to_vec()
}

/// Never returns: an endless loop the optimiser cannot remove or shorten.
fn spin_forever() -> ! {
    let mut n: u64 = 0;
    loop {
        n = core::hint::black_box(n).wrapping_add(1);
    }
}

/// Never returns: allocates and writes 1 MiB blocks, never freeing them, until the
/// allocator returns null (linear memory cannot grow any more), then traps.
/// (If the host makes `memory.grow` trap instead of fail, the trap comes from there.)
fn allocate_forever() -> ! {
    use alloc::alloc::{Layout, alloc};
    const BLOCK: usize = 1 << 20;
    let layout = match Layout::from_size_align(BLOCK, 16) {
        Ok(l) => l,
        Err(_) => core::arch::wasm32::unreachable(),
    };
    loop {
        // SAFETY: `layout` has a non-zero size.
        let block = unsafe { alloc(layout) };
        if block.is_null() {
            core::arch::wasm32::unreachable();
        }
        // Touch every byte so the memory is really used, and hide the pointer from
        // the optimiser so neither the allocation nor the writes are elided.
        // SAFETY: `block` is a fresh allocation of BLOCK bytes.
        unsafe { core::ptr::write_bytes(block, 0xA5, BLOCK) };
        core::hint::black_box(block);
    }
}

impl Guest for Faults {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let is_get = matches!(request.method(), Method::Get);
        let path = path_of(&request);
        let health = is_get && path == b"/health";

        match FAULT {
            Fault::None => {}
            Fault::HealthTrap if health => core::arch::wasm32::unreachable(),
            Fault::HealthTrap => {}
            Fault::Crash if path.starts_with(b"/crash") => core::arch::wasm32::unreachable(),
            Fault::Crash => {}
            Fault::Spin if health => {}
            Fault::Spin => spin_forever(),
            Fault::Bomb => allocate_forever(),
        }

        let body: Vec<u8> = if health {
            b"ok\n".to_vec()
        } else {
            [
                b"hello from fleetcast ".as_slice(),
                VERSION.as_bytes(),
                b"\n",
            ]
            .concat()
        };
        drop(request);

        let headers = Fields::new();
        // Static, valid names and values: `set` cannot fail here.
        let _ = headers.set("x-hello-version", &[VERSION.as_bytes().to_vec()]);
        let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
        let _ = headers.set("content-length", &[itoa(body.len())]);

        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(200);
        let Ok(out_body) = response.body() else {
            core::arch::wasm32::unreachable()
        };
        ResponseOutparam::set(response_out, Ok(response));

        if let Ok(stream) = out_body.write() {
            // Bodies are far below the 4096-byte limit of one blocking write.
            let _ = stream.blocking_write_and_flush(&body);
        }
        let _ = OutgoingBody::finish(out_body, None);
    }
}

/// Decimal digits of `n` (avoids pulling in `core::fmt`).
fn itoa(mut n: usize) -> Vec<u8> {
    let mut digits = Vec::new();
    loop {
        digits.push(b'0' + (n % 10) as u8);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    digits
}
