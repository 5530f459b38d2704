//! Jobs: the model, the worker loop that runs them, and the maintenance pass.

pub mod model;
