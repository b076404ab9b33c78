//! `Strict-Transport-Security` on every answer of a TLS listener that asks for it
//! (`tls.hsts`): proxied responses and deskgate's own (errors, redirects, ACME answers) alike,
//! because it is a downstream module, which Pingora runs on whatever is written to the client.
//! An upstream's own header wins. Plain listeners never get one (browsers ignore it there, and
//! RFC 6797 forbids sending it over plain HTTP).

use async_trait::async_trait;
use http::header::STRICT_TRANSPORT_SECURITY;
use http::HeaderValue;
use pingora::modules::http::{HttpModule, HttpModuleBuilder, Module};
use pingora::prelude::*;

pub struct HstsBuilder(pub HeaderValue);

impl HttpModuleBuilder for HstsBuilder {
    fn init(&self) -> Module {
        Box::new(Hsts(self.0.clone()))
    }
}

struct Hsts(HeaderValue);

#[async_trait]
impl HttpModule for Hsts {
    async fn response_header_filter(
        &mut self,
        resp: &mut pingora::http::ResponseHeader,
        _end_of_stream: bool,
    ) -> Result<()> {
        if !resp.headers.contains_key(STRICT_TRANSPORT_SECURITY) {
            resp.insert_header(STRICT_TRANSPORT_SECURITY, self.0.clone())?;
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}
