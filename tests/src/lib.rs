//! End-to-end suites live in tests/tests/. This library holds shared measurement helpers.

pub mod bulk;
pub mod load;

pub use bulk::raw_quinn_bulk_copy;
