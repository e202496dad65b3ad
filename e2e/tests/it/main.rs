//! Integration tests of the e2e support crate, against a real control plane
//! (`e2e/services/kube.sh`, or the one `$KUBECONFIG` names) and the test kubelet.

mod harness;
mod helm;
mod kubelet;
mod operator;
