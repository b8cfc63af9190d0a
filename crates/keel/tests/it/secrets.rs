//! Secrets never appear in plaintext: not in the binary profile, not in its JSON, not in what
//! `keel show` prints. With a recovery key they are encrypted to it and can be recovered; without
//! one they are withheld.

use std::fs;
use std::path::Path;

use base64::Engine as _;
use serde_json::Value;

use crate::support::{keel, rows, s, DebianRoot, Keel};

/// SHA-512 crypt of a known password (`openssl passwd -6 -salt keelTestSalt01 …`).
const SHADOW_HASH: &str = "$6$keelTestSalt01$KMq5z8jt/SaPN/J.tkv4udIzBFJ6XUYLA9fR36y9GPSlQ3tkQvTfqOx7huhifCMbRJ.QEqwhfTq4IiRTv7pOk.";

/// Private keys planted in (or generated into) the root, by path.
const KEYS: &[&str] = &[
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssl/private/server.key",
    "/etc/myapp/tls.pem",
];

/// The strings that must never appear: the hash, its digest part, and every line of every key's
/// base64 body, except lines that are public: an OpenSSH private key embeds its public key,
/// which the `.pub` file beside it publishes anyway.
fn needles(root: &DebianRoot) -> Vec<String> {
    let mut out = vec![
        SHADOW_HASH.to_string(),
        SHADOW_HASH.rsplit('$').next().unwrap().to_string(),
    ];
    for key in KEYS {
        let pem = root.read(key);
        assert!(
            pem.contains("PRIVATE KEY-----"),
            "{key} is not a private key:\n{pem}"
        );
        let public = fs::read_to_string(root.join(&format!("{key}.pub"))).unwrap_or_default();
        let body: Vec<String> = pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 16 && !public.contains(l))
            .map(str::to_string)
            .collect();
        assert!(body.len() >= 2, "{key} has too short a body to test with");
        out.extend(body);
    }
    out
}

/// Bytes of every blob in a JSON profile document, decoded.
fn blob_bytes(doc: &Value) -> Vec<Vec<u8>> {
    doc["blobs"]
        .as_object()
        .map(|m| {
            m.values()
                .map(|b| match (b["text"].as_str(), b["base64"].as_str()) {
                    (Some(t), _) => t.as_bytes().to_vec(),
                    (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .expect("blob base64"),
                    _ => panic!("blob is neither text nor base64: {b}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[track_caller]
fn assert_no_secret(what: &str, hay: &[u8], needles: &[String]) {
    for n in needles {
        assert!(
            !contains(hay, n),
            "{what} contains secret material in plaintext: {n:?}"
        );
    }
}

fn plant_secrets(root: &DebianRoot) {
    // A password hash for root, set the way an administrator would.
    root.chroot_stdin(
        &["chpasswd", "--encrypted"],
        Some(format!("root:{SHADOW_HASH}\n").as_bytes()),
    );
    assert!(root.read("/etc/shadow").contains(SHADOW_HASH));
    // A TLS key where such keys usually live, and one where nobody would look.
    fs::create_dir_all(root.join("/etc/ssl/private")).unwrap();
    fs::create_dir_all(root.join("/etc/myapp")).unwrap();
    root.chroot(&[
        "ssh-keygen",
        "-q",
        "-t",
        "rsa",
        "-b",
        "2048",
        "-m",
        "PEM",
        "-N",
        "",
        "-f",
        "/etc/ssl/private/server.key",
    ]);
    root.chroot(&[
        "ssh-keygen",
        "-q",
        "-t",
        "ecdsa",
        "-m",
        "PKCS8",
        "-N",
        "",
        "-f",
        "/etc/myapp/tls.pem",
    ]);
}

/// Captures `root` every way a profile can be written or shown and checks none of it leaks.
fn capture_everywhere(root: &DebianRoot, extra: &[&str], dir: &Path, needles: &[String]) -> Value {
    let state = Keel::new();
    let file = dir.join(format!("profile-{}.keel", extra.len()));
    state.capture_file(root.path(), &file, extra);
    assert_no_secret("the .keel file", &fs::read(&file).unwrap(), needles);

    let json = state.capture(root.path(), &[&["--format", "json"], extra].concat());
    assert_no_secret("capture --format json", &json.stdout, needles);
    let doc = json.json();
    for (i, b) in blob_bytes(&doc).iter().enumerate() {
        assert_no_secret(&format!("blob #{i} of capture --format json"), b, needles);
    }

    let f = file.to_str().unwrap();
    let shown = keel(&["show", f, "--format", "json"]);
    shown.expect_ok();
    assert_no_secret("show --format json", &shown.stdout, needles);
    let shown_doc = shown.json();
    for (i, b) in blob_bytes(&shown_doc).iter().enumerate() {
        assert_no_secret(&format!("blob #{i} of show --format json"), b, needles);
    }
    let text = keel(&["show", f]);
    text.expect_ok();
    assert_no_secret("show", &text.stdout, needles);
    for section in ["security", "files", "users"] {
        let text = keel(&["show", f, "--section", section]);
        text.expect_ok();
        assert_no_secret(&format!("show --section {section}"), &text.stdout, needles);
    }
    shown_doc
}

fn secret_row<'a>(doc: &'a Value, path: &str) -> &'a Value {
    rows(doc, "security", "secrets")
        .iter()
        .find(|r| s(r, "path") == path)
        .unwrap_or_else(|| {
            panic!(
                "{path} is not in security.secrets: {:#?}",
                rows(doc, "security", "secrets")
            )
        })
}

fn file_row<'a>(doc: &'a Value, path: &str) -> &'a Value {
    rows(doc, "files", "files")
        .iter()
        .find(|r| s(r, "path") == path)
        .unwrap_or_else(|| panic!("{path} is not in files.files"))
}

#[test]
fn secrets_are_withheld_or_encrypted_never_in_plaintext() {
    let Some(root) = DebianRoot::new() else {
        return;
    };
    plant_secrets(&root);
    let needles = needles(&root);
    let dir = tempfile::tempdir().unwrap();
    let secret_paths: Vec<&str> = KEYS.iter().copied().chain(["/etc/shadow"]).collect();

    // Without a recovery key: withheld.
    let doc = capture_everywhere(&root, &[], dir.path(), &needles);
    for path in &secret_paths {
        let row = secret_row(&doc, path);
        assert_eq!(row["withheld"], Value::Bool(true), "{row}");
        assert!(row["ciphertext"].is_null(), "{row}");
        let f = file_row(&doc, path);
        assert_eq!(s(f, "status"), "secret", "{f}");
        assert_eq!(
            f["content"],
            Value::Bool(false),
            "a secret file has content: {f}"
        );
    }
    let root_user = rows(&doc, "users", "users")
        .iter()
        .find(|u| s(u, "name") == "root")
        .unwrap();
    assert_eq!(s(root_user, "password_status"), "set", "{root_user}");

    // With a recovery key from `keel keygen`: encrypted to it, and recoverable with it.
    let identity_file = dir.path().join("recovery.key");
    let keygen = keel(&["keygen", "--output", identity_file.to_str().unwrap()]);
    keygen.expect_ok();
    let public = keygen.stdout_str().trim().to_string();
    assert!(
        public.starts_with("age1"),
        "keel keygen printed {public:?}, not an age public key"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&identity_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o077,
            0,
            "the recovery identity is readable by others ({mode:o})"
        );
    }
    let identity_text = fs::read_to_string(&identity_file).unwrap();
    // Losing a recovery identity loses every secret encrypted to it: never overwrite one.
    let again = keel(&["keygen", "--output", identity_file.to_str().unwrap()]);
    assert_eq!(
        again.code,
        Some(2),
        "keygen overwrote {}",
        identity_file.display()
    );
    assert!(
        again.stderr.lines().any(|l| l.starts_with("error:")),
        "{}",
        again.stderr
    );
    assert_eq!(fs::read_to_string(&identity_file).unwrap(), identity_text);
    let identity: age::x25519::Identity = identity_text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("an AGE-SECRET-KEY line in the identity file")
        .parse()
        .expect("a valid age identity");
    assert_eq!(
        identity.to_public().to_string(),
        public,
        "keygen printed another key's public half"
    );

    let doc = capture_everywhere(&root, &["--recovery-key", &public], dir.path(), &needles);
    assert_eq!(s(&doc["profile"]["meta"], "recovery_recipient"), public);
    for path in &secret_paths {
        let row = secret_row(&doc, path);
        assert_eq!(row["withheld"], Value::Bool(false), "{row}");
        let address = row["ciphertext"]
            .as_str()
            .unwrap_or_else(|| panic!("no ciphertext: {row}"));
        let blob = &doc["blobs"][address];
        let ciphertext = match (blob["base64"].as_str(), blob["text"].as_str()) {
            (Some(b64), _) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
            (None, Some(text)) => text.as_bytes().to_vec(),
            _ => panic!("ciphertext blob {address} of {path} is not in the profile"),
        };
        let plain = age::decrypt(&identity, &ciphertext).unwrap_or_else(|e| {
            panic!("{path}: ciphertext does not decrypt with the identity: {e}")
        });
        assert_eq!(
            plain,
            fs::read(root.join(path)).unwrap(),
            "{path} does not decrypt to itself"
        );
        assert_eq!(s(file_row(&doc, path), "status"), "secret");
    }
}
