//! Name constraints (RFC 5280 section 4.2.1.10): a CA's permitted and excluded subtrees bind
//! the names of every certificate below it. Written here because no crate capf uses checks
//! them (x509-cert only parses them); the forms are the RFC's: directory names by leading
//! RDNs, DNS names and URI hosts by domain, mailboxes by address or domain, IP addresses by
//! network. A constraint of a form not listed binds nothing unless a certificate below
//! carries a name of that form, which is then refused (it cannot be checked).

use der::Encode;
use x509_cert::ext::pkix::constraints::name::{GeneralSubtrees, NameConstraints};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;

/// The names of a certificate that constraints look at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Names {
    /// The subject's RDNs, each as DER.
    pub subject_rdns: Vec<Vec<u8>>,
    pub dns: Vec<String>,
    pub uris: Vec<String>,
    pub emails: Vec<String>,
    pub ips: Vec<Vec<u8>>,
    /// Directory names among the subject alternative names, as RDN DERs.
    pub san_directories: Vec<Vec<Vec<u8>>>,
    /// A subject alternative name of another form (otherName, registeredID, ...).
    pub other_form: bool,
}

impl Names {
    pub(crate) fn of_subject(subject: &Name) -> Names {
        Names {
            subject_rdns: subject
                .0
                .iter()
                .filter_map(|rdn| rdn.to_der().ok())
                .collect(),
            ..Names::default()
        }
    }

    /// Adds one subject alternative name.
    pub(crate) fn add(&mut self, name: &GeneralName) {
        match name {
            GeneralName::DnsName(n) => self.dns.push(n.to_string()),
            GeneralName::UniformResourceIdentifier(n) => self.uris.push(n.to_string()),
            GeneralName::Rfc822Name(n) => self.emails.push(n.to_string()),
            GeneralName::IpAddress(n) => self.ips.push(n.as_bytes().to_vec()),
            // Checked like the subject.
            GeneralName::DirectoryName(name) => self
                .san_directories
                .push(name.0.iter().filter_map(|rdn| rdn.to_der().ok()).collect()),
            _ => self.other_form = true,
        }
    }
}

/// One subtree, in the forms checked here.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Subtree {
    Directory(Vec<Vec<u8>>),
    Dns(String),
    Uri(String),
    Email(String),
    /// Address then mask, both 4 or both 16 bytes.
    Ip(Vec<u8>),
    Other,
}

/// A CA's name constraints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Constraints {
    permitted: Vec<Subtree>,
    excluded: Vec<Subtree>,
}

impl Constraints {
    pub(crate) fn new(nc: &NameConstraints) -> Constraints {
        let read = |trees: &Option<GeneralSubtrees>| -> Vec<Subtree> {
            trees
                .iter()
                .flatten()
                .map(|tree| match &tree.base {
                    GeneralName::DirectoryName(name) => Subtree::Directory(
                        name.0.iter().filter_map(|rdn| rdn.to_der().ok()).collect(),
                    ),
                    GeneralName::DnsName(n) => Subtree::Dns(n.to_string()),
                    GeneralName::UniformResourceIdentifier(n) => Subtree::Uri(n.to_string()),
                    GeneralName::Rfc822Name(n) => Subtree::Email(n.to_string()),
                    GeneralName::IpAddress(n) => Subtree::Ip(n.as_bytes().to_vec()),
                    _ => Subtree::Other,
                })
                .collect()
        };
        Constraints {
            permitted: read(&nc.permitted_subtrees),
            excluded: read(&nc.excluded_subtrees),
        }
    }

    /// Whether `names` lie within the permitted subtrees and outside the excluded ones.
    /// `check_subject` is false for a self-issued intermediate, whose subject is exempt.
    pub(crate) fn allow(&self, names: &Names, check_subject: bool) -> bool {
        let mut directories = names.san_directories.clone();
        if check_subject && !names.subject_rdns.is_empty() {
            directories.push(names.subject_rdns.clone());
        }
        self.allow_form(&directories, directory_tree, |rdns, base| {
            rdns.starts_with(base)
        }) && self.allow_form(&names.dns, dns_tree, |name, c| in_domain(name, c))
            && self.allow_form(&names.uris, uri_tree, |uri, c| {
                uri_host(uri).is_some_and(|host| in_host_tree(host, c))
            })
            && self.allow_form(&names.emails, email_tree, |email, c| {
                in_mailbox_tree(email, c)
            })
            && self.allow_form(&names.ips, ip_tree, |ip, c| in_network(ip, c))
            && !(names.other_form && self.has_other())
    }

    fn has_other(&self) -> bool {
        self.permitted
            .iter()
            .chain(&self.excluded)
            .any(|t| *t == Subtree::Other)
    }

    /// One form of names: each must match a permitted subtree of its form (when there is
    /// one) and no excluded one.
    fn allow_form<N, C: ?Sized>(
        &self,
        names: &[N],
        form: impl Fn(&Subtree) -> Option<&C>,
        within: impl Fn(&N, &C) -> bool,
    ) -> bool {
        let permitted: Vec<&C> = self.permitted.iter().filter_map(&form).collect();
        let excluded: Vec<&C> = self.excluded.iter().filter_map(&form).collect();
        names.iter().all(|name| {
            (permitted.is_empty() || permitted.iter().any(|c| within(name, c)))
                && !excluded.iter().any(|c| within(name, c))
        })
    }
}

fn directory_tree(t: &Subtree) -> Option<&Vec<Vec<u8>>> {
    match t {
        Subtree::Directory(base) => Some(base),
        _ => None,
    }
}

fn dns_tree(t: &Subtree) -> Option<&str> {
    match t {
        Subtree::Dns(c) => Some(c),
        _ => None,
    }
}

fn uri_tree(t: &Subtree) -> Option<&str> {
    match t {
        Subtree::Uri(c) => Some(c),
        _ => None,
    }
}

fn email_tree(t: &Subtree) -> Option<&str> {
    match t {
        Subtree::Email(c) => Some(c),
        _ => None,
    }
}

fn ip_tree(t: &Subtree) -> Option<&[u8]> {
    match t {
        Subtree::Ip(c) => Some(c),
        _ => None,
    }
}

/// `name` is `constraint` or a subdomain of it ("" allows every name).
fn in_domain(name: &str, constraint: &str) -> bool {
    let (name, constraint) = (name.to_ascii_lowercase(), constraint.to_ascii_lowercase());
    let constraint = constraint.trim_start_matches('.');
    constraint.is_empty()
        || name == constraint
        || name
            .strip_suffix(constraint)
            .is_some_and(|head| head.ends_with('.'))
}

/// A URI's host: a constraint ".example.com" allows hosts below it, "example.com" that host.
fn in_host_tree(host: &str, constraint: &str) -> bool {
    if constraint.starts_with('.') {
        host.to_ascii_lowercase()
            .ends_with(&constraint.to_ascii_lowercase())
    } else {
        host.eq_ignore_ascii_case(constraint)
    }
}

/// The host of `scheme://[user@]host[:port][/...]`; none for a URI without one (which a
/// URI constraint then does not permit).
fn uri_host(uri: &str) -> Option<&str> {
    let rest = uri.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host.split(':').next()?,
    };
    (!host.is_empty()).then_some(host)
}

/// A mailbox constraint names one address (with '@'), a host, or domains below one.
fn in_mailbox_tree(email: &str, constraint: &str) -> bool {
    if constraint.contains('@') {
        return email.eq_ignore_ascii_case(constraint);
    }
    let Some((_, host)) = email.rsplit_once('@') else {
        return false;
    };
    in_host_tree(host, constraint)
}

/// `ip` lies in the network `constraint` (address then mask).
fn in_network(ip: &[u8], constraint: &[u8]) -> bool {
    if constraint.len() != ip.len() * 2 {
        return false;
    }
    let (addr, mask) = constraint.split_at(ip.len());
    ip.iter()
        .zip(addr)
        .zip(mask)
        .all(|((i, a), m)| i & m == a & m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_hosts_mailboxes_networks() {
        assert!(in_domain("phones.example.com", "example.com"));
        assert!(in_domain("example.com", "example.com"));
        assert!(!in_domain("badexample.com", "example.com"));
        assert!(in_domain("a.example.com", ".example.com"));
        assert!(in_domain("anything", ""));
        assert_eq!(
            uri_host("https://user@Host.example:8443/x"),
            Some("Host.example")
        );
        assert_eq!(uri_host("SEP00112233AABB"), None);
        assert!(in_host_tree("host.example", "HOST.example"));
        assert!(!in_host_tree("host.example", ".host.example"));
        assert!(in_host_tree("a.host.example", ".host.example"));
        assert!(in_mailbox_tree("pki@example.com", "example.com"));
        assert!(in_mailbox_tree("pki@example.com", "pki@example.com"));
        assert!(!in_mailbox_tree("pki@other.com", "example.com"));
        assert!(in_network(&[10, 1, 2, 3], &[10, 0, 0, 0, 255, 0, 0, 0]));
        assert!(!in_network(&[11, 1, 2, 3], &[10, 0, 0, 0, 255, 0, 0, 0]));
        assert!(!in_network(&[10, 1, 2, 3], &[10, 0, 0, 0]));
    }

    #[test]
    fn permitted_and_excluded_subtrees() {
        let tree = |s: Subtree| Constraints {
            permitted: vec![s],
            excluded: vec![],
        };
        let names = Names {
            subject_rdns: vec![b"O".to_vec(), b"CN".to_vec()],
            dns: vec!["phone.example.com".into()],
            ..Names::default()
        };
        assert!(tree(Subtree::Directory(vec![b"O".to_vec()])).allow(&names, true));
        assert!(!tree(Subtree::Directory(vec![b"X".to_vec()])).allow(&names, true));
        // A self-issued intermediate's subject is exempt.
        assert!(tree(Subtree::Directory(vec![b"X".to_vec()])).allow(&names, false));
        assert!(tree(Subtree::Dns("example.com".into())).allow(&names, true));
        assert!(!tree(Subtree::Dns("example.org".into())).allow(&names, true));
        // A form the certificate has no name of binds nothing.
        assert!(tree(Subtree::Email("example.org".into())).allow(&names, true));
        let excluded = Constraints {
            permitted: vec![],
            excluded: vec![Subtree::Dns("example.com".into())],
        };
        assert!(!excluded.allow(&names, true));
        // An unchecked form refuses a certificate that has a name of an unchecked form.
        let other = Names {
            other_form: true,
            ..names.clone()
        };
        assert!(tree(Subtree::Dns("example.com".into())).allow(&other, true));
        assert!(!tree(Subtree::Other).allow(&other, true));
    }
}
