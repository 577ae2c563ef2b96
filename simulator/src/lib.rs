//! The Instagram simulator: an Instagram-compatible HTTP server with a deterministic data set,
//! server-side sliding windows, fault injection and an audit log of every request.
//!
//! It must not import anything from `trawl-shared`: it is an independent oracle for the client.
//!
//! Empty until the simulator issue (#4) lands; nothing here is wired into the `trawl` binary yet.
