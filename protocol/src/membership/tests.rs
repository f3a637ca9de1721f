//! Unit tests of membership.
