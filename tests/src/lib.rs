//! `keeper-tests`: the multi-process cluster harness and end-to-end suites.
