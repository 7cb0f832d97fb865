//! The local provider reproduces sentence-transformers' vectors: all-MiniLM-L6-v2 (BERT) and
//! all-mpnet-base-v2 (MPNet), each against reference vectors sentence-transformers made from
//! the same files (tests/fixtures/minilm_reference.json; tests/fixtures/mpnet_reference.json,
//! by bench/mpnet_reference.py).

use std::sync::OnceLock;

use puzzlegen::embed::local::LocalModel;

use crate::common;

/// The MiniLM model, loaded once for the tests of this module.
fn model() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| LocalModel::load(&common::model_dir()).unwrap())
}

/// Embeds every text of the reference file `fixture` in one call (so texts of different
/// lengths share padded micro-batches) and checks each vector: unit length, cosine to the
/// reference at least `min_cosine`. Returns the number of texts.
fn assert_matches_reference(model: &LocalModel, fixture: &str, min_cosine: f32) -> usize {
    let fixture = common::read_json(&common::repo_file(fixture));
    let items = fixture["items"].as_array().unwrap();
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
        worst.0 >= min_cosine,
        "cosine {} on {:?} is below {min_cosine}",
        worst.0,
        worst.1
    );
    items.len()
}

#[test]
fn matches_sentence_transformers_on_every_reference_text() {
    assert_eq!(
        assert_matches_reference(model(), "tests/fixtures/minilm_reference.json", 0.999),
        53
    );
}

#[test]
fn mpnet_matches_sentence_transformers_on_every_reference_text() {
    let model = LocalModel::load(&common::mpnet_dir()).unwrap();
    assert_eq!(model.space().dimension, 768);
    assert_eq!(
        model.space().model_id,
        "sentence-transformers/all-mpnet-base-v2"
    );
    let fixture = common::read_json(&common::repo_file("tests/fixtures/mpnet_reference.json"));
    // The set holds a text past max_seq_length (384), so truncation is checked too.
    let longest = fixture["tokens"].as_array().unwrap().iter();
    assert!(longest.filter_map(|n| n.as_u64()).max().unwrap() > 384);
    assert_eq!(
        assert_matches_reference(&model, "tests/fixtures/mpnet_reference.json", 0.99999),
        27
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

#[test]
fn the_folder_decides_lowercasing_pooling_and_normalisation() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cased-minilm");
    std::fs::create_dir(&dir).unwrap();
    let minilm = common::model_dir();
    std::os::unix::fs::symlink(
        minilm.join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    std::fs::copy(minilm.join("config.json"), dir.join("config.json")).unwrap();
    // MiniLM's tokenizer made cased: "APPLE" and "apple" then tokenize differently.
    let mut tokenizer = common::read_json(&minilm.join("tokenizer.json"));
    tokenizer["normalizer"]["lowercase"] = false.into();
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let texts = ["APPLE".to_owned(), "apple".to_owned()];
    let cosine_of_pair = || {
        let v = LocalModel::load(&dir)
            .unwrap()
            .embed_blocking(&texts)
            .unwrap();
        puzzlegen::embed::cosine(&v[0], &v[1])
    };
    let cased = cosine_of_pair();
    assert!(cased < 0.99, "a cased tokenizer: cosine {cased}");
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        r#"{"max_seq_length": 256, "do_lower_case": true}"#,
    )
    .unwrap();
    let lowered = cosine_of_pair();
    assert!(lowered > 0.99999, "do_lower_case: cosine {lowered}");

    // CLS pooling and no Normalize module: the vector is MiniLM's first token, not unit length.
    std::fs::create_dir(dir.join("1_Pooling")).unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"type": "sentence_transformers.models.Transformer"},
            {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}]"#,
    )
    .unwrap();
    let cls = LocalModel::load(&dir)
        .unwrap()
        .embed_blocking(&texts)
        .unwrap();
    let norm: f32 = cls[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() > 0.01, "not normalised: {norm}");
    let mean = model().embed_blocking(&texts).unwrap();
    let cos = puzzlegen::embed::cosine(&cls[1], &mean[1]);
    assert!(cos < 0.99, "CLS pooling gave the mean: cosine {cos}");
}
