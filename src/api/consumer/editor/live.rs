//! `/ws/{sessionId}`: the editor's live socket.
