//! Third-party TURN clients the tests drive: coturn's `turnutils_uclient` (and its echo
//! peer) and Python aioice/aiortc. One builder each, so a test names only what differs.

pub mod aioice;
pub mod coturn;
