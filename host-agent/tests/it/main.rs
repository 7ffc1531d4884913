//! host-agent's integration tests: domain XML against libvirt's schema, on private test-driver hosts.

mod xml;
