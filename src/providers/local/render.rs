//! Deterministic PNG rendering for the local provider (placeholder, replaced by the renderer).
