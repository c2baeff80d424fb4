//! How many sockets each user has on this node. The presence store counts sockets across the
//! cluster; state that lives on one node (typing timers) ends when the user's last socket on
//! *this* node goes, which only a local count can tell without races.

use dashmap::DashMap;

/// Per-user socket counts on this node.
#[derive(Default)]
pub struct LocalSockets {
    counts: DashMap<String, usize>,
}

impl LocalSockets {
    /// A socket of `user` connected here.
    pub fn add(&self, user: &str) {
        *self.counts.entry(user.to_owned()).or_default() += 1;
    }

    /// A socket of `user` left; returns how many the user still has here.
    pub fn remove(&self, user: &str) -> usize {
        let left = match self.counts.get_mut(user) {
            Some(mut count) => {
                *count = count.saturating_sub(1);
                *count
            }
            None => 0,
        };
        if left == 0 {
            self.counts.remove_if(user, |_, c| *c == 0);
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::LocalSockets;

    #[test]
    fn counts_per_user() {
        let local = LocalSockets::default();
        local.add("u");
        local.add("u");
        assert_eq!(local.remove("u"), 1);
        assert_eq!(local.remove("u"), 0);
        assert_eq!(local.remove("u"), 0, "never negative");
    }
}
