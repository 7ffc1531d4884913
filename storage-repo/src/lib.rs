//! Storage repositories and the disk formats they hold.
//!
//! **This crate knows nothing about XenAPI or HTTP**: it manages SRs (directories of VHD files, ISO libraries) and
//! reads, writes and converts disk images (VHD, VMDK, qcow2, raw). `xapi-server` maps the SR, PBD, VDI, VBD and SM
//! classes onto it. It is filled in by the storage issue; nothing here is used by the daemon yet.
