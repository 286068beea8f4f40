//! tracelight-web
