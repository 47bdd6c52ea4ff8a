//! iptables partitions on loopback for real-process tests: DROP rules for
//! every TCP packet to or from one port, removed when the guard drops
//! (also on panic). Needs root and iptables (`scripts/install-deps.sh`
//! installs it); tests call [`PortCut::available`] first and skip loudly
//! without it. Rules name only the test's own ports, chosen at run time.

use std::process::Command;

/// iptables DROP rules for every TCP packet to or from one loopback port;
/// removed on drop.
pub struct PortCut {
    rules: Vec<Vec<String>>,
}

impl PortCut {
    fn rule(port: u16, dir: &str) -> Vec<String> {
        [
            "INPUT",
            "-i",
            "lo",
            "-p",
            "tcp",
            dir,
            &port.to_string(),
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn iptables(op: &str, rule: &[String]) -> Result<(), String> {
        let out = Command::new("iptables")
            .arg("-w")
            .arg(op)
            .args(rule)
            .output()
            .map_err(|e| format!("running iptables: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `Ok` when iptables can be listed here (binary present, enough rights).
    pub fn available() -> Result<(), String> {
        let out = Command::new("iptables")
            .args(["-w", "-S", "INPUT"])
            .output()
            .map_err(|e| format!("iptables not runnable: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Drops every packet to and from `port` on `lo` until the guard drops.
    pub fn cut(port: u16) -> Result<PortCut, String> {
        let mut cut = PortCut { rules: Vec::new() };
        for dir in ["--dport", "--sport"] {
            let rule = PortCut::rule(port, dir);
            PortCut::iptables("-I", &rule)?;
            cut.rules.push(rule);
        }
        Ok(cut)
    }
}

impl Drop for PortCut {
    fn drop(&mut self) {
        for rule in self.rules.drain(..) {
            if let Err(e) = PortCut::iptables("-D", &rule) {
                eprintln!("removing iptables rule {rule:?} failed: {e}");
            }
        }
    }
}
