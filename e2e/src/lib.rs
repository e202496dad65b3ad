//! End-to-end test support for weir: a process kubelet (`kubelet`, binary `test-kubelet`) that
//! runs the Pods of a real Kubernetes control plane (`e2e/services/kube.sh`) as local processes.

pub mod kubelet;
