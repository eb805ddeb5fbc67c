//! edgeray cluster runtime.
