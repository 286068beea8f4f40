//! The delivery client never uses a proxy, whatever the environment says: through a proxy the
//! SSRF guard would check the proxy's address instead of the destination's. Its own test
//! binary, because it sets process-wide environment variables that other tests' clients
//! would read.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn the_delivery_client_ignores_proxy_settings() {
    // A proxy that answers 200 to everything and counts what it gets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let proxied = Arc::new(AtomicUsize::new(0));
    let counted = proxied.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        }
    });
    for v in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        // SAFETY: the only test in this binary; nothing else reads the environment meanwhile.
        unsafe { std::env::set_var(v, &url) };
    }
    let c = tracelight_alerts::deliver::client(Vec::new());
    // Through the proxy this would be a 200. Without it, the guard refuses the loopback name.
    let err = c.post("http://localhost:9/hook").body("{}").send().await.unwrap_err();
    assert!(format!("{err:?}").contains("refused:"), "{err:?}");
    let err = c.post("https://localhost:9/hook").body("{}").send().await.unwrap_err();
    assert!(format!("{err:?}").contains("refused:"), "{err:?}");
    assert_eq!(proxied.load(Ordering::SeqCst), 0, "the proxy was not used");
}
