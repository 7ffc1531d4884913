//! Differencing chains.
