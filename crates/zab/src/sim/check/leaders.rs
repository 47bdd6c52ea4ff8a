//! At most one established leader per epoch.

use std::collections::BTreeMap;

use super::Violation;
use crate::NodeId;

/// Which member was established in each epoch.
#[derive(Debug, Default)]
pub struct OneLeaderPerEpoch {
    leaders: BTreeMap<u32, NodeId>,
}

impl OneLeaderPerEpoch {
    /// `leader` became established in `epoch`.
    pub fn on_established(&mut self, leader: NodeId, epoch: u32) -> Result<(), Violation> {
        match self.leaders.insert(epoch, leader) {
            Some(other) if other != leader => Err(Violation::new(
                "OneLeaderPerEpoch",
                format!("members {other} and {leader} both established in epoch {epoch}"),
            )),
            _ => Ok(()),
        }
    }

    /// How many epochs had an established leader.
    pub fn epochs(&self) -> usize {
        self.leaders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_two_leaders_in_one_epoch() {
        let mut c = OneLeaderPerEpoch::default();
        c.on_established(1, 1).unwrap();
        c.on_established(1, 1).unwrap();
        c.on_established(2, 2).unwrap();
        assert!(c.on_established(3, 2).is_err());
    }
}
