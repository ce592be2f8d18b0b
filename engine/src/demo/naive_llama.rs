//! A deliberately plain f32 Llama forward (one token at a time, KV in Vecs),
//! used only by tests to check that the random weights give varied greedy
//! output. It follows HF Llama: RMSNorm, rotate-half RoPE, GQA, SiLU MLP,
//! tied LM head.

use safetensors::SafeTensors;

use super::spec::DemoSpec;

pub struct NaiveLlama {
    spec: DemoSpec,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// Per layer: cached K and V rows, one `kv_dim` row per position.
    cache: Vec<(Vec<f32>, Vec<f32>)>,
}

struct Layer {
    input_norm: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    o: Vec<f32>,
    post_norm: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
}

impl NaiveLlama {
    /// Load from the bytes of an f32 `model.safetensors`.
    pub fn load(spec: &DemoSpec, bytes: &[u8]) -> Self {
        let st = SafeTensors::deserialize(bytes).expect("valid safetensors");
        let get = |name: &str| -> Vec<f32> {
            let t = st.tensor(name).unwrap_or_else(|_| panic!("missing {name}"));
            assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
            t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        };
        let layers = (0..spec.num_hidden_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                Layer {
                    input_norm: get(&format!("{p}.input_layernorm.weight")),
                    q: get(&format!("{p}.self_attn.q_proj.weight")),
                    k: get(&format!("{p}.self_attn.k_proj.weight")),
                    v: get(&format!("{p}.self_attn.v_proj.weight")),
                    o: get(&format!("{p}.self_attn.o_proj.weight")),
                    post_norm: get(&format!("{p}.post_attention_layernorm.weight")),
                    gate: get(&format!("{p}.mlp.gate_proj.weight")),
                    up: get(&format!("{p}.mlp.up_proj.weight")),
                    down: get(&format!("{p}.mlp.down_proj.weight")),
                }
            })
            .collect();
        NaiveLlama {
            spec: spec.clone(),
            embed: get("model.embed_tokens.weight"),
            layers,
            norm: get("model.norm.weight"),
            cache: vec![(Vec::new(), Vec::new()); spec.num_hidden_layers],
        }
    }

    /// Feed one token at the next position; return the logits.
    pub fn step(&mut self, token: u32) -> Vec<f32> {
        let s = &self.spec;
        let (h, d) = (s.hidden_size, s.head_dim);
        let pos = self.cache[0].0.len() / (s.num_key_value_heads * d);
        let group = s.num_attention_heads / s.num_key_value_heads;
        let t = token as usize;
        let mut x = self.embed[t * h..(t + 1) * h].to_vec();

        for (layer, (kc, vc)) in self.layers.iter().zip(self.cache.iter_mut()) {
            let xn = rms_norm(&x, &layer.input_norm, s.rms_norm_eps);
            let mut q = matvec(&layer.q, &xn);
            let mut k = matvec(&layer.k, &xn);
            let v = matvec(&layer.v, &xn);
            rope(&mut q, d, pos, s.rope_theta);
            rope(&mut k, d, pos, s.rope_theta);
            kc.extend_from_slice(&k);
            vc.extend_from_slice(&v);

            let kv_dim = s.num_key_value_heads * d;
            let mut attn = vec![0f32; s.num_attention_heads * d];
            for head in 0..s.num_attention_heads {
                let kvh = head / group;
                let qh = &q[head * d..(head + 1) * d];
                let scores: Vec<f32> = (0..=pos)
                    .map(|p| {
                        let kp = &kc[p * kv_dim + kvh * d..][..d];
                        dot(qh, kp) / (d as f32).sqrt()
                    })
                    .collect();
                let probs = softmax(&scores);
                let out = &mut attn[head * d..(head + 1) * d];
                for (p, w) in probs.iter().enumerate() {
                    let vp = &vc[p * kv_dim + kvh * d..][..d];
                    out.iter_mut().zip(vp).for_each(|(o, v)| *o += w * v);
                }
            }
            add(&mut x, &matvec(&layer.o, &attn));

            let xn = rms_norm(&x, &layer.post_norm, s.rms_norm_eps);
            let g = matvec(&layer.gate, &xn);
            let u = matvec(&layer.up, &xn);
            let act: Vec<f32> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            add(&mut x, &matvec(&layer.down, &act));
        }
        let xn = rms_norm(&x, &self.norm, s.rms_norm_eps);
        matvec(&self.embed, &xn)
    }
}

/// `w` is row-major `[out, in]`, as nn.Linear stores it.
fn matvec(w: &[f32], x: &[f32]) -> Vec<f32> {
    w.chunks_exact(x.len()).map(|row| dot(row, x)).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
}

fn rms_norm(x: &[f32], w: &[f32], eps: f64) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (ms + eps as f32).sqrt();
    x.iter().zip(w).map(|(v, w)| v * scale * w).collect()
}

fn softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// HF "rotate half" RoPE: pairs element i with i + d/2 in every head.
fn rope(x: &mut [f32], d: usize, pos: usize, theta: f64) {
    let half = d / 2;
    for head in x.chunks_exact_mut(d) {
        for i in 0..half {
            let freq = theta.powf(-((2 * i) as f64) / d as f64);
            let (sin, cos) = (pos as f64 * freq).sin_cos();
            let (a, b) = (head[i] as f64, head[i + half] as f64);
            head[i] = (a * cos - b * sin) as f32;
            head[i + half] = (b * cos + a * sin) as f32;
        }
    }
}

/// Greedy continuation of `prompt` for `n` tokens.
pub fn greedy(model: &mut NaiveLlama, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut logits = Vec::new();
    for &t in prompt {
        logits = model.step(t);
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let next = argmax(&logits);
        out.push(next);
        logits = model.step(next);
    }
    out
}

pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}
