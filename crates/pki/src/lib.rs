//! posnet's public-key infrastructure and secrets at rest: the deployment
//! CA, host and terminal certificates (rcgen), TLS configurations (rustls,
//! TLS 1.3 and 1.2, client certificates required), and the master key that
//! seals every private and symmetric key on disk.

pub mod bundle;
pub mod ca;
pub mod seal;
pub mod tls;

pub use bundle::{BundleError, EnrollmentBundle};
pub use ca::{Deployment, InitOptions, IssuedCertificate, PkiError};
pub use seal::{MasterKey, SealError, Secret};
pub use tls::{Admission, PeerTerminal, TlsError};
