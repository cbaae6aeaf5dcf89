//! all-MiniLM-L6-v2 sentence embeddings with the real weights.

mod common;

use triage_runtime::{EmbedHandle, Embedder, cosine};

#[tokio::test]
async fn related_sentences_score_clearly_above_unrelated_ones() {
    let e = EmbedHandle::load(&common::minilm_dir()).unwrap();
    assert_eq!(e.dim(), 384);
    let texts = vec![
        "The tenant must give sixty days' written notice before terminating the lease.".to_string(),
        "Either party may end the rental agreement with two months' notice in writing.".to_string(),
        "Quarterly revenue grew 12% on strong cloud demand.".to_string(),
        "My cat likes to sleep in the sun.".to_string(),
    ];
    let v = e.embed(texts).await.unwrap();
    assert_eq!(v.len(), 4);
    for x in &v {
        let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    let related = cosine(&v[0], &v[1]);
    let unrelated = cosine(&v[0], &v[2]).max(cosine(&v[0], &v[3]));
    assert!(related > 0.5, "{related}");
    assert!(
        related > unrelated + 0.3,
        "related {related} vs unrelated {unrelated}"
    );
}

#[test]
fn padding_to_the_longest_does_not_change_a_vector() {
    // A short sentence embedded alone and in a batch with a long one must
    // give the same vector: padding is masked out of the mean.
    let e = Embedder::load(&common::minilm_dir()).unwrap();
    let short = "Is this contract governed by English law?";
    let long = "This Agreement shall be governed by and construed in accordance with the laws of England and Wales, and the parties submit to the exclusive jurisdiction of its courts for any dispute arising out of it.";
    let alone = &e.embed(&[short]).unwrap()[0];
    let batch = e.embed(&[long, short]).unwrap();
    let diff: f32 = alone
        .iter()
        .zip(&batch[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-4, "{diff}");
    assert!(e.embed(&[]).unwrap().is_empty());
}

#[test]
fn inputs_longer_than_the_model_allows_are_truncated_not_refused() {
    let e = Embedder::load(&common::minilm_dir()).unwrap();
    let huge = "word ".repeat(5000);
    let v = e.embed(&[huge.as_str()]).unwrap();
    assert_eq!(v[0].len(), 384);
}

#[test]
fn a_missing_model_folder_names_the_file() {
    let err = Embedder::load(std::path::Path::new("/nonexistent/minilm"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/minilm/config.json"), "{err}");
}
