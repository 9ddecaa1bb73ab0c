//! Whose shared-memory objects an opener accepts.
//!
//! A name in `/dev/shm` is first come, first served: any local user can create it before the
//! real creator does (mode 0666, so that the victim can open it), then read what the victim
//! writes, feed it forged data, or shrink the object under it. Opening therefore checks who
//! owns the object and refuses strangers with [`Error::UntrustedOwner`](crate::Error::UntrustedOwner).

/// The owners whose shared-memory objects `open`, `open_read_only`, `open_or_create` and
/// [`FrameReader::open`](crate::FrameReader::open) accept (Unix).
///
/// Always trusted: the calling process's effective user, and root (uid 0). Root can read and
/// write every process's memory anyway (`ptrace`, `/proc/<pid>/mem`), so refusing its objects
/// would protect nothing and would break the common setup of a system service that creates
/// segments for unprivileged clients; systemd and D-Bus trust root the same way.
///
/// Anything else must be named: [`user`](Self::user) trusts one more user id,
/// [`group`](Self::group) trusts objects whose group is the given group id. Only members of a
/// group can give a file that group (`/dev/shm` is not set-group-ID), so trusting a group
/// means trusting every member of it.
///
/// The object's permission bits are not checked: an object owned by a trusted user is used
/// with whatever mode that user gave it, even if it lets others write it (which lets them
/// scribble on it or truncate it; see [`Mmf`](crate::Mmf), "Truncation"). Choosing the mode is
/// the owner's decision, not the opener's.
///
/// Windows: accepted and not yet checked (a section's owner SID is not compared with
/// anything); the default security descriptor already keeps other users out of `Local\`
/// names of a session.
///
/// ```
/// use mmf::{MmfOptions, TrustedOwners};
///
/// // A camera service running as uid 990 creates the segment; members of gid 44 may too.
/// let options = MmfOptions::new("camera-0").trust_owner(990).trust_group(44);
/// // The same set, built separately (e.g. for FrameReader::open_trusting).
/// let owners = TrustedOwners::new().user(990).group(44);
/// # let _ = (options, owners);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedOwners {
    users: Vec<u32>,
    groups: Vec<u32>,
}

/// Root's user id, trusted always (see [`TrustedOwners`]).
#[cfg_attr(not(unix), allow(dead_code))]
const ROOT: u32 = 0;

impl TrustedOwners {
    /// Only the calling user and root.
    pub fn new() -> Self {
        TrustedOwners::default()
    }

    /// Also trusts objects owned by user `uid`.
    pub fn user(mut self, uid: u32) -> Self {
        if !self.users.contains(&uid) {
            self.users.push(uid);
        }
        self
    }

    /// Also trusts objects whose group is `gid` (whatever user owns them).
    pub fn group(mut self, gid: u32) -> Self {
        if !self.groups.contains(&gid) {
            self.groups.push(gid);
        }
        self
    }

    /// Whether an object owned by `uid`:`gid` may be opened by a process whose effective user
    /// is `me`. Unix only: Windows does not check owners yet.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn accepts(&self, me: u32, uid: u32, gid: u32) -> bool {
        uid == me || uid == ROOT || self.users.contains(&uid) || self.groups.contains(&gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_self_and_root_by_default_then_exactly_what_is_named() {
        let me = 1000;
        let none = TrustedOwners::new();
        assert!(none.accepts(me, me, 1000));
        assert!(none.accepts(me, ROOT, 1000), "root is trusted");
        assert!(
            !none.accepts(me, 1001, 1000),
            "a stranger in my group is not"
        );
        assert!(!none.accepts(me, 65534, 65534));

        let some = TrustedOwners::new().user(990).group(44).user(990);
        assert_eq!(some.users, [990], "naming a user twice keeps one entry");
        assert!(some.accepts(me, 990, 1), "a trusted user, any group");
        assert!(some.accepts(me, 65534, 44), "any owner, trusted group");
        assert!(!some.accepts(me, 991, 45));
    }
}
