//! Placeholder: the append-only log arrives with the durable-sessions issue.
#![warn(missing_docs)]
