// Stand-in for mlc-ai/tokenizers-cpp (its Rust crates cannot be fetched here): ids in, ids out.
// Encode: the text is decimal token ids separated by spaces. Decode: the ids back as that text.
// IdToToken / TokenToId: "<id>". Enough for MLC's engine to run a request given as token ids.
#pragma once
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace tokenizers {
class Tokenizer {
 public:
  explicit Tokenizer(size_t vocab) : vocab_(vocab) {}
  virtual ~Tokenizer() = default;
  std::vector<int32_t> Encode(const std::string& text) {
    std::istringstream in(text);
    std::vector<int32_t> ids;
    long v;
    while (in >> v) ids.push_back(static_cast<int32_t>(v));
    return ids;
  }
  std::vector<std::vector<int32_t>> EncodeBatch(const std::vector<std::string>& texts) {
    std::vector<std::vector<int32_t>> out;
    for (const auto& t : texts) out.push_back(Encode(t));
    return out;
  }
  std::string Decode(const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t i : ids) s += " " + std::to_string(i);
    return s;
  }
  size_t GetVocabSize() { return vocab_; }
  std::string IdToToken(int32_t id) { return "<" + std::to_string(id) + ">"; }
  int32_t TokenToId(const std::string& token) {
    return token.size() > 2 && token.front() == '<' ? std::stoi(token.substr(1)) : -1;
  }
  static size_t VocabFromEnv() {
    const char* v = std::getenv("MLCBUILD_STANDIN_VOCAB");
    return v ? std::stoul(v) : 256;
  }
  static std::unique_ptr<Tokenizer> FromBlobJSON(const std::string&) {
    return std::make_unique<Tokenizer>(VocabFromEnv());
  }
  static std::unique_ptr<Tokenizer> FromBlobSentencePiece(const std::string&) {
    return std::make_unique<Tokenizer>(VocabFromEnv());
  }
  static std::unique_ptr<Tokenizer> FromBlobByteLevelBPE(const std::string&, const std::string&,
                                                         const std::string&) {
    return std::make_unique<Tokenizer>(VocabFromEnv());
  }
  static std::unique_ptr<Tokenizer> FromBlobRWKVWorld(const std::string&) {
    return std::make_unique<Tokenizer>(VocabFromEnv());
  }

 private:
  size_t vocab_;
};
}  // namespace tokenizers
