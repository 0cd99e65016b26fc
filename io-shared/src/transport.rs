//! How the machines' HTTP requests (token, refresh, revocation, metadata) are sent:
//! latchkey's own client, or the embedder's.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use latchkey::{ProviderRequest, TransportError, TransportErrorKind};

use crate::http::HttpClient;
use crate::runtime::Runtime;

/// The answer to a request, or why there is none.
pub type TokenResult = Result<http::Response<Vec<u8>>, TransportError>;

/// An HTTP client of the embedder's own for the machines' requests.
pub trait TokenTransport: Send + Sync + 'static {
    /// Sends `request` and returns the response. Follow no redirects (S34).
    fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = TokenResult> + Send>>;
}

/// How requests are sent.
#[derive(Clone)]
pub enum Transport {
    /// latchkey's own HTTP/1.1 client, on the runtime's sockets.
    Builtin(HttpClient),
    /// The embedder's client.
    Custom(Arc<dyn TokenTransport>),
}

impl Transport {
    /// Sends `request` (to the token, revocation or metadata endpoint) and returns the
    /// answer.
    pub async fn send<R: Runtime>(
        &self,
        runtime: &R,
        request: http::Request<Vec<u8>>,
    ) -> TokenResult {
        match self {
            Transport::Builtin(client) => client.send_on(runtime, &request).await,
            Transport::Custom(custom) => custom.send(request).await,
        }
    }
}

impl Transport {
    /// Finishes `request` at the runtime's wall-clock time (a client assertion is signed
    /// as it leaves) and sends it.
    pub async fn send_finished<R: Runtime>(
        &self,
        runtime: &R,
        request: ProviderRequest,
    ) -> TokenResult {
        let request = request.finish(runtime.wall()).map_err(|error| {
            TransportError::new(
                TransportErrorKind::Other,
                format!("the request could not be signed: {error}"),
            )
        })?;
        self.send(runtime, request).await
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Builtin(client) => f.debug_tuple("Builtin").field(client).finish(),
            Transport::Custom(_) => f.write_str("Custom"),
        }
    }
}
