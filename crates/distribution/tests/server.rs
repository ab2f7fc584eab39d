//! Conformance tests of our registry server, spoken to over HTTP on 127.0.0.1.

mod common;

use common::{digest, start_server, write_htpasswd};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn error_code(r: reqwest::Response) -> String {
    let v: Value = r.json().await.unwrap();
    v["errors"][0]["code"].as_str().unwrap().to_string()
}

/// Pushes `data` monolithically into `repo`, asserting 201.
async fn push_blob(c: &reqwest::Client, base: &str, repo: &str, data: &[u8]) -> String {
    let d = digest(data);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    d
}

/// Pushes an OCI manifest referencing config + layers (pushed first) and returns its digest.
async fn push_image(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
    layer: &[u8],
    extra: Value,
) -> (String, Vec<u8>) {
    let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = push_blob(c, base, repo, cfg).await;
    let ld = push_blob(c, base, repo, layer).await;
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
    });
    if let Value::Object(e) = extra {
        for (k, v) in e {
            m[k] = v;
        }
    }
    let body = serde_json::to_vec(&m).unwrap();
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    (digest(&body), body)
}

#[tokio::test]
async fn base_endpoint_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path(), None).await;
    let c = http();
    let r = c.get(format!("{}/v2/", s.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    let r = c
        .get(format!("{}/v2/Bad_Name/tags/list", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "NAME_INVALID");
    let r = c
        .get(format!("{}/v2/nothere/tags/list", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
}

#[tokio::test]
async fn monolithic_push_head_get_range_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path(), None).await;
    let c = http();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let d = push_blob(&c, &s.base, "lib/app", &data).await;
    let url = format!("{}/v2/lib/app/blobs/{d}", s.base);

    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "100000");
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());

    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);

    let r = c
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/100000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[10..20]);

    let r = c
        .get(&url)
        .header("range", "bytes=99990-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[99990..]);

    let r = c
        .get(&url)
        .header("range", "bytes=200000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // Not visible in another repository.
    let r = c
        .get(format!("{}/v2/other/blobs/{d}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");

    let r = c.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn chunked_upload_with_order_checks() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path(), None).await;
    let c = http();
    let data = b"0123456789abcdefghij".to_vec();
    let r = c
        .post(format!("{}/v2/chunky/blobs/uploads/", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let url = format!("{}{loc}", s.base);

    let r = c
        .patch(&url)
        .header("content-range", "0-9")
        .header("content-type", "application/octet-stream")
        .body(data[..10].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["range"], "0-9");
    let url = format!("{}{}", s.base, r.headers()["location"].to_str().unwrap());

    // Out of order: starts at 15 instead of 10.
    let r = c
        .patch(&url)
        .header("content-range", "15-19")
        .body(data[15..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // Status still says 0-9.
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], "0-9");

    // Final chunk with the PUT.
    let d = digest(&data);
    let r = c
        .put(format!("{url}?digest={d}"))
        .header("content-range", "10-19")
        .body(data[10..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    let r = c
        .get(format!("{}/v2/chunky/blobs/{d}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
    // The session is gone.
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn streamed_upload_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path(), None).await;
    let c = http();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..64).map(|i| Ok(vec![i as u8; 16 * 1024])).collect();
    let all: Vec<u8> = chunks
        .iter()
        .flat_map(|c| c.as_ref().unwrap().clone())
        .collect();
    let r = c
        .post(format!("{}/v2/stream/blobs/uploads/", s.base))
        .send()
        .await
        .unwrap();
    let url = format!("{}{}", s.base, r.headers()["location"].to_str().unwrap());
    let r = c
        .patch(&url)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        r.headers()["range"].to_str().unwrap(),
        format!("0-{}", all.len() - 1)
    );
    let d = digest(&all);
    let r = c.put(format!("{url}?digest={d}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .get(format!("{}/v2/stream/blobs/{d}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), all.len());

    // Cancel a session.
    let r = c
        .post(format!("{}/v2/stream/blobs/uploads/", s.base))
        .send()
        .await
        .unwrap();
    let url = format!("{}{}", s.base, r.headers()["location"].to_str().unwrap());
    assert_eq!(
        c.delete(&url).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_digest_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path(), None).await;
    let c = http();
    let wrong = digest(b"something else");
    let r = c
        .post(format!("{}/v2/bad/blobs/uploads/?digest={wrong}", s.base))
        .body(b"actual content".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");

    // Same through a session.
    let r = c
        .post(format!("{}/v2/bad/blobs/uploads/", s.base))
        .send()
        .await
        .unwrap();
    let url = format!("{}{}", s.base, r.headers()["location"].to_str().unwrap());
    let r = c
        .put(format!("{url}?digest={wrong}"))
        .body(b"actual content".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");

    for d in [wrong, digest(b"actual content")] {
        let r = c
            .head(format!("{}/v2/bad/blobs/{d}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let hex = d.strip_prefix("sha256:").unwrap();
        assert!(!dir.path().join("blobs/sha256").join(hex).exists());
    }
    // Malformed digest.
    let r = c
        .post(format!(
            "{}/v2/bad/blobs/uploads/?digest=sha256:xyz",
            s.base
        ))
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn cross_repository_mount() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path(), None).await;
    let c = http();
    let d = push_blob(&c, &s.base, "src/repo", b"shared layer").await;
    let r = c
        .post(format!(
            "{}/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo",
            s.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("/v2/dst/repo/blobs/{d}")
    );
    let r = c
        .get(format!("{}/v2/dst/repo/blobs/{d}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"shared layer");

    // Not in the source repository: falls back to an upload session.
    let r = c
        .post(format!(
            "{}/v2/third/blobs/uploads/?mount={d}&from=nowhere",
            s.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/v2/third/blobs/uploads/"));
}

#[tokio::test]
async fn manifests_put_get_negotiate_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path(), None).await;
    let c = http();

    // Missing blob.
    let bogus = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(b"nope"), "size": 4},
        "layers": [],
    });
    let r = c
        .put(format!("{}/v2/m/manifests/v1", s.base))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(bogus.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");

    // Not JSON.
    let r = c
        .put(format!("{}/v2/m/manifests/v1", s.base))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");

    // Too big.
    let r = c
        .put(format!("{}/v2/m/manifests/v1", s.base))
        .body(vec![b' '; 5 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let (md, body) = push_image(&c, &s.base, "m", "v1", b"layer one", json!({})).await;

    for reference in ["v1", md.as_str()] {
        let r = c
            .get(format!("{}/v2/m/manifests/{reference}", s.base))
            .header(
                "accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["content-type"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(r.headers()["docker-content-digest"], md.as_str());
        assert_eq!(r.bytes().await.unwrap().as_ref(), &body[..]);
    }
    let r = c
        .head(format!("{}/v2/m/manifests/v1", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        body.len().to_string()
    );
    // Accept that excludes the type.
    let r = c
        .get(format!("{}/v2/m/manifests/v1", s.base))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");

    // PUT by digest with a wrong digest.
    let r = c
        .put(format!("{}/v2/m/manifests/{}", s.base, digest(b"x")))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "DIGEST_INVALID");

    // An index over the manifest, and one over a missing manifest.
    let idx = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": body.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    });
    let r = c
        .put(format!("{}/v2/m/manifests/multi", s.base))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(idx.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut bad_idx = idx.clone();
    bad_idx["manifests"][0]["digest"] = json!(digest(b"other"));
    let r = c
        .put(format!("{}/v2/m/manifests/multi2", s.base))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(bad_idx.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");

    // Delete the tag, then the manifest by digest.
    let r = c
        .delete(format!("{}/v2/m/manifests/v1", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .get(format!("{}/v2/m/manifests/v1", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = c
        .delete(format!("{}/v2/m/manifests/{md}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .get(format!("{}/v2/m/manifests/{md}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tag_and_catalog_pagination() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path(), None).await;
    let c = http();
    for t in ["e", "a", "c", "b", "d"] {
        push_image(&c, &s.base, "pages", t, b"L", json!({})).await;
    }
    for r in ["zz/last", "aa", "mm/x/y"] {
        push_blob(&c, &s.base, r, b"blob").await;
    }
    let all: Value = c
        .get(format!("{}/v2/pages/tags/list", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        all,
        json!({"name": "pages", "tags": ["a", "b", "c", "d", "e"]})
    );

    let r = c
        .get(format!("{}/v2/pages/tags/list?n=2", s.base))
        .send()
        .await
        .unwrap();
    let link = r.headers()["link"].to_str().unwrap().to_string();
    assert_eq!(link, "</v2/pages/tags/list?n=2&last=b>; rel=\"next\"");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["a", "b"]));
    let next = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    let r = c.get(format!("{}{next}", s.base)).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["c", "d"]));
    let r = c
        .get(format!("{}/v2/pages/tags/list?n=2&last=d", s.base))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("link").is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["e"]));
    let r = c
        .get(format!("{}/v2/pages/tags/list?n=0", s.base))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("link").is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!([]));

    let v: Value = c
        .get(format!("{}/v2/_catalog", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["repositories"],
        json!(["aa", "mm/x/y", "pages", "zz/last"])
    );
    let r = c
        .get(format!("{}/v2/_catalog?n=3", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["link"],
        "</v2/_catalog?n=3&last=pages>; rel=\"next\""
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], json!(["aa", "mm/x/y", "pages"]));
}

#[tokio::test]
async fn referrers_api() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path(), None).await;
    let c = http();
    let (subject, sbody) = push_image(&c, &s.base, "ref", "base", b"base layer", json!({})).await;
    let subj = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": sbody.len()});

    // Empty before any referrer.
    let r = c
        .get(format!("{}/v2/ref/referrers/{subject}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.oci.image.index.v1+json"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"], json!([]));

    let (sig, _) = push_image(
        &c,
        &s.base,
        "ref",
        "sig",
        b"signature",
        json!({"artifactType": "application/vnd.example.sig", "subject": subj, "annotations": {"k": "v"}}),
    )
    .await;
    let (sbom, _) = push_image(
        &c,
        &s.base,
        "ref",
        "sbom",
        b"sbom",
        json!({"artifactType": "application/vnd.example.sbom", "subject": subj}),
    )
    .await;

    let v: Value = c
        .get(format!("{}/v2/ref/referrers/{subject}", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ms = v["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 2);
    let mut got: Vec<&str> = ms.iter().map(|m| m["digest"].as_str().unwrap()).collect();
    got.sort();
    let mut want = vec![sig.as_str(), sbom.as_str()];
    want.sort();
    assert_eq!(got, want);

    let r = c
        .get(format!(
            "{}/v2/ref/referrers/{subject}?artifactType=application/vnd.example.sig",
            s.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], json!(sig));
    assert_eq!(v["manifests"][0]["annotations"], json!({"k": "v"}));
    assert_eq!(
        v["manifests"][0]["artifactType"],
        json!("application/vnd.example.sig")
    );

    // Deleting the referrer drops it from the list.
    c.delete(format!("{}/v2/ref/manifests/{sig}", s.base))
        .send()
        .await
        .unwrap();
    let v: Value = c
        .get(format!("{}/v2/ref/referrers/{subject}", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);

    let r = c
        .get(format!("{}/v2/ref/referrers/sha256:nothex", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = http();
    let (url, md) = {
        // No connection pooling: the first server's connections close with each request,
        // so its state (and the upload's ingest lock) is dropped with it.
        let c = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let s = start_server(dir.path(), None).await;
        let (md, _) = push_image(&c, &s.base, "keep", "v1", b"layer", json!({})).await;
        let r = c
            .post(format!("{}/v2/keep/blobs/uploads/", s.base))
            .send()
            .await
            .unwrap();
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let r = c
            .patch(format!("{}{loc}", s.base))
            .header("content-range", "0-4")
            .body(b"hello".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        (loc, md)
    };
    let s = start_server(dir.path(), None).await;
    let r = c
        .get(format!("{}/v2/keep/manifests/v1", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["docker-content-digest"], md.as_str());
    // Resume the upload session with a fresh server process state.
    let d = digest(b"hello world");
    let r = c
        .put(format!("{}{url}?digest={d}", s.base))
        .header("content-range", "5-10")
        .body(b" world".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn htpasswd_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("htpasswd");
    write_htpasswd(&pw, "alice", "s3cret");
    let s = start_server(&dir.path().join("root"), Some(&pw)).await;
    let c = http();
    let r = c.get(format!("{}/v2/", s.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"berth-registry\""
    );
    assert_eq!(error_code(r).await, "UNAUTHORIZED");
    let r = c
        .get(format!("{}/v2/", s.base))
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(format!("{}/v2/", s.base))
        .basic_auth("alice", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .post(format!("{}/v2/x/blobs/uploads/", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn manifest_put_by_digest_with_tag_params() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path(), None).await;
    let c = http();
    let (md, body) = push_image(&c, &s.base, "multi/tag", "first", b"L", json!({})).await;
    let r = c
        .put(format!(
            "{}/v2/multi/tag/manifests/{md}?tag=second&tag=third",
            s.base
        ))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = c
        .get(format!("{}/v2/multi/tag/tags/list", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"], json!(["first", "second", "third"]));
}

#[test]
fn bad_htpasswd_file_is_refused() {
    use errkind::HasKind;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("htpasswd");
    std::fs::write(&pw, "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").unwrap();
    let e = distribution::server::router(&dir.path().join("root"), Some(&pw)).unwrap_err();
    assert_eq!(e.kind(), errkind::ErrorKind::InvalidArgument);
    let e =
        distribution::server::router(&dir.path().join("root"), Some(&dir.path().join("missing")))
            .unwrap_err();
    assert!(matches!(e, distribution::server::ServeError::Htpasswd(_)));
}
