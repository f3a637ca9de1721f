//! `wasi:http/proxy` guest used by fleetcast's tests and demo.
//!
//! Every request gets `200`, `x-hello-version: <version>`, `content-type: text/plain`
//! and the body `hello from fleetcast <version>\n`, except `GET /health`, whose body is `ok\n`.
//! `<version>` is baked in at compile time from the `HELLO_VERSION` environment variable.
//!
//! The crate is `no_std` so that the component imports nothing outside the
//! `wasi:http/proxy` world (std would pull in wasi-libc and, with it,
//! `wasi:cli/environment`, `wasi:cli/exit` and `wasi:cli/terminal-*`).

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
            realloc(old_ptr, Layout::from_size_align_unchecked(old_len, align), new_len)
        }
    };
    if ptr.is_null() {
        core::arch::wasm32::unreachable();
    }
    ptr
}

struct Hello;

wasip2::http::proxy::export!(Hello);

fn is_health(request: &IncomingRequest) -> bool {
    if !matches!(request.method(), Method::Get) {
        return false;
    }
    let path_with_query = request.path_with_query().unwrap_or_default();
    let path = path_with_query.split('?').next().unwrap_or("");
    path == "/health"
}

impl Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let body: Vec<u8> = if is_health(&request) {
            b"ok\n".to_vec()
        } else {
            [b"hello from fleetcast ".as_slice(), VERSION.as_bytes(), b"\n"].concat()
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
