//! Config parsing tests.
