//! Whose shared-memory objects an opener accepts.
//!
//! A name in `/dev/shm` is first come, first served: any local user can create it before the
//! real creator does (mode 0666, so that the victim can open it), then read what the victim
//! writes, feed it forged data, or shrink the object under it. Opening therefore checks who
//! owns the object and refuses strangers with [`Error::UntrustedOwner`](crate::Error::UntrustedOwner).

/// The owners whose shared-memory objects `open`, `open_read_only`, `open_or_create` and
/// [`FrameReader::open`](crate::FrameReader::open) accept.
///
/// Unix: always trusted: the calling process's effective user, and root (uid 0). Root can read and
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
/// Windows: the owner SID of the section, and of the segment's wake semaphore, is checked
/// the same way (a creator that finds the semaphore's name already taken checks it too).
/// Always trusted: the calling process's token user, LocalSystem (`S-1-5-18`) and
/// `BUILTIN\Administrators` (`S-1-5-32-544`). Those two are Windows' root: they hold (or can
/// enable) `SeDebugPrivilege` and can read and write any process's memory, and objects an
/// elevated administrator creates are owned by the Administrators group by default, so
/// refusing them would protect nothing and would break services that create segments for
/// users. Anything else must be named with [`sid`](Self::sid), in string form. The uids
/// and gids of [`user`](Self::user) and [`group`](Self::group) are ignored on Windows, and
/// SIDs are ignored on Unix, so one set can serve both. What wine 8 (the test platform)
/// shows of this is listed in the crate's "Trust model" section.
///
/// ```
/// use mmf::{MmfOptions, TrustedOwners};
///
/// // A camera service running as uid 990 creates the segment; members of gid 44 may too.
/// let options = MmfOptions::new("camera-0").trust_owner(990).trust_group(44);
/// // The same set, built separately (e.g. for FrameReader::open_trusting).
/// let owners = TrustedOwners::new().user(990).group(44);
/// // Windows: a service account's SID.
/// let owners = owners.sid("S-1-5-21-1004336348-1177238915-682003330-1013");
/// # let _ = (options, owners);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedOwners {
    users: Vec<u32>,
    groups: Vec<u32>,
    /// Windows SIDs as given; parsed (and so validated) on every create and open.
    sids: Vec<String>,
}

/// Root's user id, trusted always (see [`TrustedOwners`]).
#[cfg_attr(not(unix), allow(dead_code))]
const ROOT: u32 = 0;

/// LocalSystem, Windows' analogue of root, trusted always (see [`TrustedOwners`]).
#[cfg_attr(not(windows), allow(dead_code))]
const LOCAL_SYSTEM: &str = "S-1-5-18";

/// `BUILTIN\Administrators`, the default owner of what an elevated administrator creates;
/// trusted always (see [`TrustedOwners`]).
#[cfg_attr(not(windows), allow(dead_code))]
const ADMINISTRATORS: &str = "S-1-5-32-544";

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

    /// Also trusts Windows objects owned by `sid`, given in string form (`S-1-5-21-…`; SDDL
    /// aliases such as `"BA"` work too). Ignored on Unix. Windows checks the text on every
    /// create and open and fails with [`Error::InvalidSid`](crate::Error::InvalidSid) if it
    /// is not a SID.
    pub fn sid(mut self, sid: impl Into<String>) -> Self {
        let sid = sid.into();
        if !self.sids.contains(&sid) {
            self.sids.push(sid);
        }
        self
    }

    /// The SIDs named with [`sid`](Self::sid), as given.
    #[cfg_attr(not(windows), allow(dead_code))]
    pub(crate) fn sids(&self) -> &[String] {
        &self.sids
    }

    /// Whether a Windows object owned by SID `owner` may be opened by a process whose token
    /// user is `me`, given the canonical forms (`ConvertSidToStringSidW`) of the named SIDs.
    #[cfg_attr(not(windows), allow(dead_code))]
    pub(crate) fn accepts_sid(me: &str, owner: &str, named: &[String]) -> bool {
        owner == me
            || owner == LOCAL_SYSTEM
            || owner == ADMINISTRATORS
            || named.iter().any(|sid| sid == owner)
    }

    /// Whether an object owned by `uid`:`gid` may be opened by a process whose effective user
    /// is `me` (Unix).
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

    #[test]
    fn windows_trusts_self_system_and_administrators_then_exactly_the_named_sids() {
        let me = "S-1-5-21-1-2-3-1000";
        let stranger = "S-1-5-21-1-2-3-1001";
        assert!(TrustedOwners::accepts_sid(me, me, &[]));
        assert!(TrustedOwners::accepts_sid(me, LOCAL_SYSTEM, &[]));
        assert!(TrustedOwners::accepts_sid(me, ADMINISTRATORS, &[]));
        assert!(!TrustedOwners::accepts_sid(me, stranger, &[]));
        assert!(!TrustedOwners::accepts_sid(me, "S-1-1-0", &[]), "Everyone");
        assert!(!TrustedOwners::accepts_sid(me, "", &[]), "no owner");
        let named = [stranger.to_owned()];
        assert!(TrustedOwners::accepts_sid(me, stranger, &named));
        assert!(!TrustedOwners::accepts_sid(
            me,
            "S-1-5-21-1-2-3-1002",
            &named
        ));

        let owners = TrustedOwners::new().sid(stranger).sid(stranger).user(990);
        assert_eq!(
            owners.sids(),
            [stranger],
            "naming a SID twice keeps one entry"
        );
        assert_eq!(owners.users, [990], "SIDs and uids live side by side");
    }
}
