//! The Lua scripts, one `.lua` file each beside this one. Every change to
//! shared state is one script, so two nodes never half-apply one; each file
//! says which `KEYS` and `ARGV` it takes.

use redis::Script;

/// The scripts, loaded once (redis-rs sends each by hash, and its text on the
/// first call a server has not seen).
pub(super) struct Scripts {
    pub(super) append: Script,
    pub(super) read: Script,
    pub(super) register: Script,
    pub(super) remove: Script,
    pub(super) attach: Script,
    pub(super) detach: Script,
    pub(super) expire: Script,
    pub(super) list: Script,
}

impl Scripts {
    pub(super) fn load() -> Self {
        Scripts {
            append: Script::new(include_str!("append.lua")),
            read: Script::new(include_str!("read.lua")),
            register: Script::new(include_str!("register.lua")),
            remove: Script::new(include_str!("remove.lua")),
            attach: Script::new(include_str!("attach.lua")),
            detach: Script::new(include_str!("detach.lua")),
            expire: Script::new(include_str!("expire.lua")),
            list: Script::new(include_str!("list.lua")),
        }
    }
}
