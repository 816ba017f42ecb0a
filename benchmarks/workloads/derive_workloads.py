#!/usr/bin/python3
"""Derives the per-layer tables of model.workload (hocon/workloads/*.json).

    apt-get install python3-torchvision      # Debian's torch + torchvision
    /usr/bin/python3 benchmarks/workloads/derive_workloads.py hocon/workloads   # Debian's python, not a pyenv one

Vision models: torchvision's own definitions, one sample through the network with forward hooks on
every leaf module (224x224, 299x299 for inception-v3; weights=None, nothing is downloaded). A layer
is a leaf module that holds parameters or does arithmetic on its input (conv, linear, batch norm,
pooling, activation):
  parameters       the module's own parameter count (torchvision's count, the totals add up to it)
  forward_flops    per sample: conv 2*Cin/groups*kh*kw*Cout*Hout*Wout (+Cout*Hout*Wout for a bias),
                   linear 2*in*out (+out), batch norm 2 per output element, every other
                   arithmetic module 1 per output element (ReLU, pooling windows counted once)
  activation_bytes per sample: the module's output elements x 4 (FP32)
Inception-v3's auxiliary classifier is left in (it is trained); torchvision counts its parameters
in the model's total (27,161,264 with aux_logits).

Transformers (bert-large, gpt2-xl): not in torchvision; built from their published shapes (BERT:
Devlin et al. 2019, 24 layers, hidden 1024, 16 heads, FFN 4096, vocab 30522, 512 positions,
sequence 128 as in phase-1 pre-training; GPT-2 XL: Radford et al. 2019, 48 layers, width 1600,
vocab 50257, context 1024), one layer per weight matrix or norm, the totals as Hugging Face counts
them (BertModel with pooler 335,141,888; GPT2Model 1,557,611,200, the LM head tied to the token
embedding: no parameters of its own, its FLOPs counted). Attention's score and weighted-sum
products (2*L*L*d each per layer) are counted on the layer that feeds them.
"""
import json
import os
import sys


def vision(name, builder, size):
    import torch
    model = builder(weights=None, **({"aux_logits": True, "init_weights": False} if name == "inception-v3" else {}))
    model.train()
    layers = []

    def hook(module, inputs, output):
        if isinstance(output, tuple):
            output = output[0]
        out = output.numel() // output.shape[0]  # per sample
        params = sum(p.numel() for p in module.parameters(recurse=False))
        kind = type(module).__name__
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            flops = 2 * (module.in_channels // module.groups) * k * out + (out if module.bias is not None else 0)
        elif isinstance(module, torch.nn.Linear):
            flops = 2 * module.in_features * module.out_features + (module.out_features if module.bias is not None else 0)
        elif isinstance(module, torch.nn.BatchNorm2d):
            flops = 2 * out
        else:
            flops = out
        layers.append({"name": module._layer_name, "kind": kind, "parameters": params,
                       "forward_flops": int(flops), "activation_bytes": int(out * 4)})

    for n, m in model.named_modules():
        if len(list(m.children())) == 0:
            m._layer_name = n
            m.register_forward_hook(hook)
    # a batch of 2: batch norm in training mode needs more than one value per channel
    with torch.no_grad():
        model(torch.zeros(2, 3, size, size))
    # a module that never ran would lose its parameters: the totals must match torchvision's
    total = sum(p.numel() for p in model.parameters())
    counted = sum(l["parameters"] for l in layers)
    assert counted == total, (name, counted, total)
    for layer in layers:
        del layer["kind"]
    return {"name": name, "source": f"torchvision {__import__('torchvision').__version__} models.{builder.__name__}, input {size}x{size}",
            "parameters": total, "layers": layers}


def linear(name, fan_in, fan_out, tokens, bias=True, extra_flops=0):
    return {"name": name, "parameters": fan_in * fan_out + (fan_out if bias else 0),
            "forward_flops": tokens * (2 * fan_in * fan_out + (fan_out if bias else 0)) + extra_flops,
            "activation_bytes": tokens * fan_out * 4}


def norm(name, width, tokens):
    return {"name": name, "parameters": 2 * width, "forward_flops": tokens * 5 * width, "activation_bytes": tokens * width * 4}


def embedding(name, rows, width, tokens):
    return {"name": name, "parameters": rows * width, "forward_flops": tokens * width, "activation_bytes": tokens * width * 4}


def bert_large():
    d, ffn, blocks, vocab, positions, L = 1024, 4096, 24, 30522, 512, 128
    layers = [embedding("embeddings.word", vocab, d, L), embedding("embeddings.position", positions, d, L),
              embedding("embeddings.token_type", 2, d, L), norm("embeddings.norm", d, L)]
    for b in range(blocks):
        p = f"encoder.{b}."
        attention = 2 * 2 * L * L * d  # QK^T and the weighted sum of V
        layers += [linear(p + "attention.query", d, d, L), linear(p + "attention.key", d, d, L),
                   linear(p + "attention.value", d, d, L, extra_flops=attention),
                   linear(p + "attention.output", d, d, L), norm(p + "attention.norm", d, L),
                   linear(p + "intermediate", d, ffn, L), linear(p + "output", ffn, d, L), norm(p + "output.norm", d, L)]
    layers.append(linear("pooler", d, d, 1))
    total = sum(l["parameters"] for l in layers)
    assert total == 335_141_888, total
    return {"name": "bert-large", "source": "Devlin et al. 2019 (BERT-large, sequence 128); Hugging Face BertModel count",
            "parameters": total, "layers": layers}


def gpt2_xl():
    d, blocks, vocab, L = 1600, 48, 50257, 1024
    layers = [embedding("wte", vocab, d, L), embedding("wpe", L, d, L)]
    for b in range(blocks):
        p = f"h.{b}."
        attention = 2 * 2 * L * L * d
        layers += [norm(p + "ln_1", d, L), linear(p + "attn.c_attn", d, 3 * d, L, extra_flops=attention),
                   linear(p + "attn.c_proj", d, d, L), norm(p + "ln_2", d, L),
                   linear(p + "mlp.c_fc", d, 4 * d, L), linear(p + "mlp.c_proj", 4 * d, d, L)]
    layers.append(norm("ln_f", d, L))
    head = linear("lm_head", d, vocab, L, bias=False)
    head["parameters"] = 0  # tied to wte
    layers.append(head)
    total = sum(l["parameters"] for l in layers)
    assert total == 1_557_611_200, total
    return {"name": "gpt2-xl", "source": "Radford et al. 2019 (GPT-2 XL, context 1024); Hugging Face GPT2Model count, LM head tied",
            "parameters": total, "layers": layers}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "hocon/workloads"
    os.makedirs(out, exist_ok=True)
    tables = [bert_large(), gpt2_xl()]
    try:
        import torchvision.models as tv
        tables += [vision("resnet50", tv.resnet50, 224), vision("resnet101", tv.resnet101, 224),
                   vision("vgg16", tv.vgg16, 224), vision("inception-v3", tv.inception_v3, 299)]
    except ImportError:
        print("torchvision is not installed: only the transformer tables were written", file=sys.stderr)
    for table in tables:
        table["forward_flops"] = sum(l["forward_flops"] for l in table["layers"])
        path = os.path.join(out, table["name"] + ".json")
        with open(path, "w") as f:
            json.dump(table, f, indent=1)
            f.write("\n")
        print(f"{path}: {len(table['layers'])} layers, {table['parameters']:,} parameters, "
              f"{table['forward_flops'] / 1e9:.2f} GFLOP forward per sample")


if __name__ == "__main__":
    main()
