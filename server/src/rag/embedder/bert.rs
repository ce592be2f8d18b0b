//! BERT encoder forward (the architecture of all-MiniLM-L6-v2 and
//! bge-small-en-v1.5) on candle: embeddings, post-norm self-attention layers,
//! last hidden states out. Written here rather than pulling in
//! candle-transformers (100+ architectures) for one small encoder; the
//! parity test against sentence-transformers guards it.

use candle_core::{Module, Result, Tensor};

use super::ops;
use candle_nn::{embedding, layer_norm, Embedding, LayerNorm, VarBuilder};
use serde::Deserialize;

/// The fields of a BERT `config.json` the forward needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Refuses what this forward does not implement, naming the field.
    pub fn check(&self) -> std::result::Result<(), String> {
        if let Some(t) = &self.model_type {
            if t != "bert" {
                return Err(format!(
                    "config.json model_type is {t:?}; the embedder runs BERT-family models (model_type \"bert\")"
                ));
            }
        }
        if let Some(p) = &self.position_embedding_type {
            if p != "absolute" {
                return Err(format!(
                    "config.json position_embedding_type {p:?} is not supported (only \"absolute\")"
                ));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err("config.json hidden_size is not a multiple of num_attention_heads".into());
        }
        Activation::parse(&self.hidden_act).map(|_| ())
    }
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

impl Activation {
    fn parse(name: &str) -> std::result::Result<Self, String> {
        match name {
            "gelu" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(format!(
                "config.json hidden_act {other:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)"
            )),
        }
    }

    /// Applies the activation to a tensor nothing else holds (in place
    /// where there is a parallel kernel for it).
    fn apply(self, xs: Tensor) -> Result<Tensor> {
        match self {
            Activation::GeluErf => ops::in_place(xs, &ops::GeluErfInPlace),
            Activation::GeluTanh => xs.gelu(),
            Activation::Relu => xs.relu(),
        }
    }
}

struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
}

impl Embeddings {
    fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        Ok(Embeddings {
            word: embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("word_embeddings"))?,
            position: embedding(
                cfg.max_position_embeddings,
                cfg.hidden_size,
                vb.pp("position_embeddings"),
            )?,
            token_type: embedding(
                cfg.type_vocab_size,
                cfg.hidden_size,
                vb.pp("token_type_embeddings"),
            )?,
            norm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (_batch, len) = input_ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, input_ids.device())?;
        let types = input_ids.zeros_like()?;
        let xs = self
            .word
            .forward(input_ids)?
            .broadcast_add(&self.position.forward(&positions)?)?
            .add(&self.token_type.forward(&types)?)?;
        self.norm.forward(&xs)
    }
}

/// A dense layer on `tandem_kernels::linear`, the engine's AVX-512/AVX2
/// GEMM, which reads the `[out, in]` weight in place (with candle's
/// `Linear` instead the whole embedder is ~20% slower, docs/rag.md).
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Dense {
            weight: vb.get((out_dim, in_dim), "weight")?,
            bias: vb.get(out_dim, "bias")?,
        })
    }

    /// `xs` `[..., in]` to `[..., out]`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        tandem_kernels::linear(xs, &self.weight, Some(&self.bias))
    }
}

fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Dense> {
    Dense::load(in_dim, out_dim, vb)
}

struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    attn_out: Dense,
    attn_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    out_norm: LayerNorm,
    heads: usize,
    act: Activation,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &BertConfig, act: Activation) -> Result<Self> {
        let h = cfg.hidden_size;
        let attn = vb.pp("attention");
        let this = attn.pp("self");
        Ok(Layer {
            query: linear(h, h, this.pp("query"))?,
            key: linear(h, h, this.pp("key"))?,
            value: linear(h, h, this.pp("value"))?,
            attn_out: linear(h, h, attn.pp("output").pp("dense"))?,
            attn_norm: layer_norm(h, cfg.layer_norm_eps, attn.pp("output").pp("LayerNorm"))?,
            intermediate: linear(h, cfg.intermediate_size, vb.pp("intermediate").pp("dense"))?,
            output: linear(cfg.intermediate_size, h, vb.pp("output").pp("dense"))?,
            out_norm: layer_norm(h, cfg.layer_norm_eps, vb.pp("output").pp("LayerNorm"))?,
            heads: cfg.num_attention_heads,
            act,
        })
    }

    /// `keep`: [batch, len], true for real tokens (padding gets no attention).
    fn forward(&self, xs: &Tensor, keep: &[bool]) -> Result<Tensor> {
        let (b, len, h) = xs.dims3()?;
        let head_dim = h / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, len, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.query.forward(xs)?)?;
        let k = split(self.key.forward(xs)?)?;
        let v = split(self.value.forward(xs)?)?;
        let softmax = ops::MaskedSoftmaxInPlace {
            scale: 1.0 / (head_dim as f32).sqrt(),
            keep,
            heads: self.heads,
            len,
        };
        let probs = ops::in_place(q.matmul(&k.t()?)?, &softmax)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, len, h))?;
        let xs = self
            .attn_norm
            .forward(&(self.attn_out.forward(&ctx)? + xs)?)?;
        let inner = self.act.apply(self.intermediate.forward(&xs)?)?;
        self.out_norm.forward(&(self.output.forward(&inner)? + xs)?)
    }
}

/// A loaded BERT encoder.
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

impl Bert {
    /// Loads the weights; checkpoints saved from `BertForX` carry a `bert.` prefix.
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let act = Activation::parse(&cfg.hidden_act).map_err(candle_core::Error::msg)?;
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else {
            vb.pp("bert")
        };
        let embeddings = Embeddings::load(vb.pp("embeddings"), cfg)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(vb.pp("encoder").pp("layer").pp(i), cfg, act))
            .collect::<Result<Vec<_>>>()?;
        Ok(Bert { embeddings, layers })
    }

    /// Last hidden states [batch, len, hidden] for `input_ids` [batch, len]
    /// and `attention_mask` [batch, len] (1 = token, 0 = padding), both u32.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let keep: Vec<bool> = attention_mask
            .flatten_all()?
            .to_vec1::<u32>()?
            .into_iter()
            .map(|m| m != 0)
            .collect();
        let mut xs = self.embeddings.forward(input_ids)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &keep)?;
        }
        Ok(xs)
    }
}
