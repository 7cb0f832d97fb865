//! The local provider reproduces sentence-transformers' all-MiniLM-L6-v2 vectors.

use std::sync::OnceLock;

use puzzlegen::embed::local::LocalModel;

use crate::common;

/// The model, loaded once for the tests of this module.
fn model() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| LocalModel::load(&common::model_dir()).unwrap())
}

#[test]
fn matches_sentence_transformers_on_every_reference_text() {
    let model = model();
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_file("tests/fixtures/minilm_reference.json"))
            .unwrap(),
    )
    .unwrap();
    let items = fixture["items"].as_array().unwrap();
    assert_eq!(items.len(), 53);
    let texts: Vec<String> = items
        .iter()
        .map(|i| i["text"].as_str().unwrap().to_owned())
        .collect();
    let ours = model.embed_blocking(&texts).unwrap();
    let mut worst = (1.0f32, String::new());
    for (item, v) in items.iter().zip(&ours) {
        let reference: Vec<f32> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(v.len(), reference.len());
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
        let cos = puzzlegen::embed::cosine(v, &reference);
        if cos < worst.0 {
            worst = (
                cos,
                item["text"].as_str().unwrap().chars().take(40).collect(),
            );
        }
    }
    assert!(
        worst.0 >= 0.999,
        "cosine {} on {:?} is below 0.999",
        worst.0,
        worst.1
    );
}

#[test]
fn batch_order_and_size_do_not_change_vectors() {
    let model = model();
    let texts: Vec<String> = (0..150)
        .map(|i| format!("word number {i} {}", "long ".repeat(i % 7)))
        .collect();
    let all = model.embed_blocking(&texts).unwrap();
    let one = model.embed_blocking(&texts[42..43]).unwrap();
    let cos = puzzlegen::embed::cosine(&all[42], &one[0]);
    assert!(cos > 0.99999, "padding changed the vector: cosine {cos}");
}
