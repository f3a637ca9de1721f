//! Unit tests of the node layers.
