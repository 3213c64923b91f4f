//! Unit tests for scope, alias and column resolution.
use super::classify;
