//! `<class>-list` with xe's default columns per class, against the real daemon.

use expect_test::expect;

use super::storage::masked;
use super::{PASSWORD, Xe, complete, start_daemon};

/// `text` with uuids named as in `names` and the host's name-label written `$HOSTNAME`.
fn shown(xe: &Xe, text: &str, names: &[(&str, &str)]) -> String {
    let hostname = xe.val(&["host-list", "params=name-label", "--minimal"]);
    masked(text, names).replace(&format!(": {hostname}\n"), ": $HOSTNAME\n")
}

#[test]
fn lists_show_xe_default_columns() {
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, xe) = start_daemon(dir.path());
    let sr = xe.val(&["sr-list", "name-label=Local storage", "--minimal"]);
    let host = xe.val(&["host-list", "--minimal"]);
    let pool = xe.val(&["pool-list", "--minimal"]);
    let vdi = xe.val(&["vdi-create", &format!("sr-uuid={sr}"), "name-label=lists-disk", "virtual-size=1MiB"]);
    let vm = xe.val(&["vm-install", "template=Generic Linux (direct kernel boot)", "new-name-label=lists-vm"]);
    let vbd = xe.val(&["vbd-create", &format!("vm-uuid={vm}"), &format!("vdi-uuid={vdi}"), "device=0"]);
    let pbd = xe.val(&["pbd-list", &format!("sr-uuid={sr}"), "--minimal"]);
    let names = [(&*sr, "$SR"), (&*host, "$HOST"), (&*pool, "$POOL"), (&*vdi, "$VDI"), (&*vm, "$VM"), (&*vbd, "$VBD")];
    let names = [&names[..], &[(&*pbd, "$PBD")]].concat();
    let tmp = dir.path().display().to_string();
    let list = |args: &[&str]| shown(&xe, &xe.ok(args), &names).replace(&tmp, "$DIR");

    expect![[r#"
        uuid ( RO)           : $VM
             name-label ( RW): lists-vm
            power-state ( RO): halted

    "#]]
    .assert_eq(&list(&["vm-list", "name-label=lists-vm"]));
    expect![[r#"
        uuid ( RO)                : $SR
                  name-label ( RW): Local storage
            name-description ( RW): 
                        host ( RO): $HOSTNAME
                        type ( RO): ext
                content-type ( RO): user

    "#]]
    .assert_eq(&list(&["sr-list", &format!("uuid={sr}")]));
    expect![[r#"
        uuid ( RO)                : $VDI
                  name-label ( RW): lists-disk
            name-description ( RW): 
                     sr-uuid ( RO): $SR
                virtual-size ( RO): 2097152
                    sharable ( RW): false
                   read-only ( RW): false

    "#]]
    .assert_eq(&list(&["vdi-list", &format!("uuid={vdi}")]));
    expect![[r#"
        uuid ( RO)             : $VBD
                  vm-uuid ( RO): $VM
            vm-name-label ( RO): lists-vm
                 vdi-uuid ( RO): $VDI
                    empty ( RO): false
                   device ( RO): 

    "#]]
    .assert_eq(&list(&["vbd-list", &format!("uuid={vbd}")]));
    expect![[r#"
        uuid ( RO)                  : $PBD
                     host-uuid ( RO): $HOST
                       sr-uuid ( RO): $SR
                 device-config (MRO): location: $DIR/data/sr/$SR
            currently-attached ( RO): true

    "#]]
    .assert_eq(&list(&["pbd-list", &format!("uuid={pbd}")]));
    expect![[r#"
        uuid ( RO)                : $HOST
                  name-label ( RW): $HOSTNAME
            name-description ( RW): Default install

    "#]]
    .assert_eq(&list(&["host-list"]));
    expect![[r#"
        uuid ( RO)                : $POOL
                  name-label ( RW): 
            name-description ( RW): 
                      master ( RO): $HOST
                  default-SR ( RW): $SR

    "#]]
    .assert_eq(&list(&["pool-list"]));
    expect![[r#"
        uuid ( RO)                : <uuid>
                  name-label ( RW): Generic Linux (direct kernel boot)
            name-description ( RW): A Linux machine booted directly into a kernel and initrd: set PV_kernel, PV_ramdisk and PV_args after cloning. No disks.

    "#]]
    .assert_eq(&list(&["template-list", "name-label=Generic Linux (direct kernel boot)"]));

    // params= and --minimal are as before; computed columns can be asked for by name.
    expect![[r#"
        vm-name-label ( RO)    : lists-vm
                 vdi-uuid ( RO): $VDI
               userdevice ( RW): 0

    "#]]
    .assert_eq(&list(&["vbd-list", &format!("uuid={vbd}"), "params=vm-name-label,vdi-uuid,userdevice"]));
    assert_eq!(xe.val(&["vdi-list", &format!("uuid={vdi}"), "--minimal"]), vdi);
    assert_eq!(xe.val(&["vbd-list", &format!("vm-uuid={vm}"), "--minimal"]), vbd);
    let all = xe.ok(&["vdi-list", &format!("uuid={vdi}"), "params=all"]);
    assert!(all.contains("cbt-enabled ( RO): false\n"), "{all}");
    assert!(all.lines().count() > 20, "{all}");
    let unknown = xe.err(&["vdi-list", "params=uuid,nothing"]);
    assert_eq!(unknown, "Unknown field 'nothing' for class vdi.\n");
}

/// Completion of values from the daemon: `uuid=`, `<class>=`, `<class>-uuid=`, with the connection options of the
/// command line.
#[test]
fn bash_completion_completes_values_from_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, xe) = start_daemon(dir.path());
    let port = xe.port.to_string();
    let conn = ["xe", "-s", "127.0.0.1", "-p", port.as_str(), "-u", "root", "-pw", PASSWORD];
    let complete = |words: &[&str]| complete(&[&conn[..], words].concat());
    let sr = xe.val(&["sr-list", "name-label=Local storage", "--minimal"]);
    let vdi = xe.val(&["vdi-create", &format!("sr-uuid={sr}"), "name-label=completed disk", "virtual-size=1MiB"]);
    let vm = xe.val(&["vm-install", "template=Generic Linux (direct kernel boot)", "new-name-label=completed-vm"]);
    let host = xe.val(&["host-list", "--minimal"]);

    assert_eq!(complete(&["vdi-param-get", &format!("uuid={}", &vdi[..8])]), format!("uuid={vdi}"));
    assert_eq!(complete(&["vdi-destroy", &format!("uuid={}", &vdi[..8])]), format!("uuid={vdi}"));
    assert_eq!(complete(&["vm-start", "vm=completed"]), "vm=completed-vm");
    assert_eq!(complete(&["vm-start", &format!("vm={}", &vm[..8])]), format!("vm={vm}"));
    let dom0 = complete(&["vm-param-list", "vm=Control"]);
    assert!(dom0.starts_with(r"vm=Control\ domain\ on\ host:\ "), "names are shell-quoted: {dom0}");
    assert_eq!(complete(&["vbd-create", &format!("vdi-uuid={}", &vdi[..8])]), format!("vdi-uuid={vdi}"));
    assert_eq!(complete(&["vdi-copy", &format!("into-vdi-uuid={}", &vdi[..8])]), format!("into-vdi-uuid={vdi}"));
    assert_eq!(complete(&["vdi-create", &format!("sr-uuid={}", &sr[..8])]), format!("sr-uuid={sr}"));
    assert_eq!(complete(&["vm-start", &format!("on={}", &host[..8])]), format!("on={host}"));
    assert_eq!(
        complete(&["vm-install", "template-name-label=Generic\\ Linux\\ (direct"]),
        r"template-name-label=Generic\ Linux\ \(direct\ kernel\ boot\)"
    );
    let all = complete(&["vdi-param-get", "uuid="]);
    assert!(all.split(' ').any(|w| w == format!("uuid={vdi}")), "{all}");
    // Split at `=` as bash splits words by default.
    assert_eq!(complete(&["vdi-param-get", "uuid", "=", &vdi[..8]]), vdi);
    assert!(complete(&["vdi-param-get", "uuid", "="]).split(' ').any(|w| w == format!("={vdi}")));
    // Nothing when nothing matches, or the connection is refused.
    assert_eq!(complete(&["vdi-param-get", "uuid=zz"]), "");
    let mut refused = conn.to_vec();
    refused[4] = "1";
    assert_eq!(super::complete(&[&refused[..], &["vm-start", "vm="]].concat()), "");
}
