// dump_tensors: llama.cpp's intermediate tensors of one prompt pass, for comparing kiln's forward pass
// layer by layer (docs/COMPARING.md). Runs the prompt as greedy_ids does (one batch, logits of the last
// row, 2 threads) and writes every F32 tensor whose graph name is one of NAME... to DIR/NAME.f32.
//   [DUMP_STEPS=N] dump_tensors MODEL.gguf PROMPT DIR NAME...
// With DUMP_STEPS=N it then decodes N greedy tokens one at a time (as greedy_ids does, with the same
// context size) and the files hold the tensors of the last of those passes.
#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <set>
static std::set<std::string> want; static std::string dir;
static bool cb(struct ggml_tensor * t, bool ask, void *) {
    std::string n = ggml_get_name(t);
    if (ask) return want.count(n) > 0;
    if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) { fprintf(stderr, "skip %s\n", n.c_str()); return true; }
    std::vector<float> buf(ggml_nelements(t));
    ggml_backend_tensor_get(t, buf.data(), 0, ggml_nbytes(t));
    // NAME.f32 holds the last tensor of that name (several ops may share one: Qcur-0 is the
    // product, then the bias added, then RoPE), NAME@OP.f32 each op's.
    for (const std::string & file : {n, n + "@" + ggml_op_desc(t)}) {
        FILE * f = fopen((dir + "/" + file + ".f32").c_str(), "wb");
        if (!f) { fprintf(stderr, "cannot write %s/%s.f32\n", dir.c_str(), file.c_str()); return false; }
        fwrite(buf.data(), 4, buf.size(), f);
        fclose(f);
    }
    fprintf(stderr, "dumped %s [%lld %lld %lld]\n", n.c_str(), (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2]);
    return true;
}
static void batch_set_tokens(llama_batch_ext * batch, const llama_token * tokens, int32_t n_tokens, llama_pos pos_0) {
    llama_batch_ext_clear(batch);
    for (int32_t i = 0; i < n_tokens; ++i) {
        const int32_t idx = llama_batch_ext_add_token(batch, 0, tokens[i]);
        const llama_pos pos = pos_0 + i;
        llama_batch_ext_set_pos(batch, idx, &pos);
    }
    llama_batch_ext_set_output_logits(batch, n_tokens - 1, true);
}
int main(int argc, char ** argv) {
    if (argc < 5) { fprintf(stderr, "usage: %s MODEL.gguf PROMPT DIR NAME...\n", argv[0]); return 2; }
    std::string model_path = argv[1], prompt = argv[2]; dir = argv[3];
    for (int i = 4; i < argc; i++) want.insert(argv[i]);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params(); mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mp);
    if (!model) { fprintf(stderr, "load failed\n"); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_prompt = -llama_tokenize(vocab, prompt.c_str(), prompt.size(), NULL, 0, true, true);
    std::vector<llama_token> toks(n_prompt);
    llama_tokenize(vocab, prompt.c_str(), prompt.size(), toks.data(), toks.size(), true, true);
    llama_context_params cp = llama_context_default_params();
    const char * se = getenv("DUMP_STEPS");
    cp.n_ctx = n_prompt + (se ? atoi(se) : 0) + 1 + 8; cp.n_batch = n_prompt; cp.n_threads = 2; cp.n_threads_batch = 2;
    cp.cb_eval = cb; cp.cb_eval_user_data = nullptr;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "ctx failed\n"); return 1; }
    llama_batch_ext * batch = llama_batch_ext_init(ctx);
    batch_set_tokens(batch, toks.data(), n_prompt, 0);
    if (llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch)) { fprintf(stderr, "decode failed\n"); return 1; }
    // DUMP_STEPS=N: then N greedy decode steps, one token each; the files hold the last pass.
    const char * steps_env = getenv("DUMP_STEPS");
    const int steps = steps_env ? atoi(steps_env) : 0;
    const int n_vocab = llama_vocab_n_tokens(vocab);
    for (int step = 0, pos = n_prompt; step < steps; step++, pos++) {
        const float * logits = llama_get_logits_ith(ctx, -1);
        llama_token next = 0;
        for (int i = 1; i < n_vocab; i++) if (logits[i] > logits[next]) next = i;
        batch_set_tokens(batch, &next, 1, pos);
        if (llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch)) { fprintf(stderr, "decode failed\n"); return 1; }
    }
    return 0;
}
