//! Pure node-side logic of the agent. No I/O, no clock reads.
