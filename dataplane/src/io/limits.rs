//! Process limits the relay needs: every allocation holds one relay socket, so the default
//! soft limit of 1024 open files would cap a dataplane at about a thousand allocations.
#![allow(unsafe_code)]

use std::io;

fn open_files_limit() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live rlimit the call fills in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

/// The soft open-file limit.
pub fn open_files_soft_limit() -> io::Result<u64> {
    open_files_limit().map(|l| l.rlim_cur)
}

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
pub fn raise_open_files() -> io::Result<u64> {
    let mut lim = open_files_limit()?;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a live rlimit read by the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
    }
    Ok(lim.rlim_cur)
}
