//! Golden and property tests of the encoders.
