from pathlib import Path

import pytest

from workbench.data.treebank import DependencySentence, read_conllu, universal_relation
from workbench.errors import DataError

UD_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ud_english_ewt" / "en_ewt-ud-dev.conllu"

# Sentence 1: a multiword token (don't = do + n't) and an empty node (4.1) between words 4 and 5.
# Sentence 2: no sent_id or text, a multiword token, SpaceAfter=No and relation subtypes.
TINY = """\
# sent_id = s1
# text = I don't know.
1	I	I	PRON	PRP	_	4	nsubj	_	_
2-3	don't	_	_	_	_	_	_	_	_
2	do	do	AUX	VBP	_	4	aux	_	_
3	n't	not	PART	RB	_	4	advmod	_	_
4	know	know	VERB	VB	_	0	root	_	_
4.1	know	know	VERB	VB	_	_	_	4:conj	_
5	.	.	PUNCT	.	_	4	punct	_	_

1-2	We're	_	_	_	_	_	_	_	_
1	We	we	PRON	PRP	_	3	nsubj:pass	_	_
2	're	be	AUX	VBP	_	3	aux:pass	_	_
3	done	do	VERB	VBN	_	0	root	_	SpaceAfter=No
4	.	.	PUNCT	.	_	3	punct	_	_
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.conllu"
    path.write_text(TINY, encoding="utf-8")
    return path


def test_words_replace_multiword_tokens_and_empty_nodes_are_dropped(tiny: Path):
    first, second = read_conllu(tiny)
    assert first == DependencySentence(
        sent_id="s1",
        words=["I", "do", "n't", "know", "."],
        upos=["PRON", "AUX", "PART", "VERB", "PUNCT"],
        xpos=["PRP", "VBP", "RB", "VB", "."],
        heads=[4, 4, 4, 0, 4],
        deprels=["nsubj", "aux", "advmod", "root", "punct"],
        text="I don't know.",
    )
    assert len(second) == 4
    assert second.heads == [3, 3, 0, 3]


def test_missing_text_and_id_are_rebuilt_from_surface_tokens(tiny: Path):
    second = read_conllu(tiny)[1]
    assert second.text == "We're done."
    assert second.sent_id == "tiny.conllu:11"  # file and first line of the block


def test_universal_relations_drop_the_subtype(tiny: Path):
    second = read_conllu(tiny)[1]
    assert second.deprels == ["nsubj:pass", "aux:pass", "root", "punct"]
    assert second.universal_deprels == ["nsubj", "aux", "root", "punct"]
    assert universal_relation("obl:tmod") == "obl"


def test_limit(tiny: Path):
    assert [s.sent_id for s in read_conllu(tiny, limit=1)] == ["s1"]
    assert read_conllu(tiny, limit=0) == []


BAD_LINES = [
    # (replacement for the line of "know" in sentence 1, words expected in the message)
    ("4\tknow\tknow\tVERB\tVB\t_\tx\troot\t_\t_", ["head"]),
    ("4\tknow\tknow\tVERB\tVB\t_\t0\troot", ["10", "columns", "found 8"]),
    ("4\tknow\tknow\tVERB\tVB\t_\t9\troot\t_\t_", ["head 9", "1..5"]),
    ("x\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_", ["valid ID"]),
    ("6\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_", ["word id 6", "expected 4"]),
    ("4\tknow\tknow\tVERB\tVB\t_\t0\t_\t_\t_", ["no dependency relation"]),
]


@pytest.mark.parametrize(("bad_line", "keywords"), BAD_LINES)
def test_malformed_lines_are_reported_with_file_and_line(tmp_path: Path, bad_line: str, keywords: list[str]):
    path = tmp_path / "bad.conllu"
    path.write_text(TINY.replace("4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_", bad_line), encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_conllu(path)
    assert f"{path}:7:" in str(caught.value)
    for keyword in keywords:
        assert keyword in str(caught.value)


def test_missing_file(tmp_path: Path):
    with pytest.raises(DataError, match="no such CoNLL-U file"):
        read_conllu(tmp_path / "absent.conllu")


@pytest.mark.skipif(not UD_DEV.is_file(), reason="shared UD English EWT data not present")
def test_first_sentences_of_ewt_dev():
    sentences = read_conllu(UD_DEV, limit=59)
    assert len(sentences) == 59
    first = sentences[0]
    assert first.words == ["From", "the", "AP", "comes", "this", "story", ":"]
    assert first.heads == [3, 3, 4, 0, 6, 4, 4]
    assert first.text == "From the AP comes this story :"
    # Sentence 7 ends in "didn't" (tokens 29-30): did + n't, 31 words in all.
    seventh = sentences[6]
    assert len(seventh) == 31
    assert seventh.words[-3:] == ["did", "n't", "."]
    assert seventh.heads[-3:] == [4, 29, 4]
    # Sentence 59 has an empty node 8.1 between "like" (8) and "about" (9).
    last = sentences[58]
    assert len(last) == 33
    assert last.words[7:9] == ["like", "about"]
    assert last.heads[8] == 11
    assert last.deprels[20] == "nsubj:pass"


@pytest.mark.skipif(not UD_DEV.is_file(), reason="shared UD English EWT data not present")
def test_whole_ewt_dev_file():
    sentences = read_conllu(UD_DEV)
    assert len(sentences) == 2001  # "# sent_id" lines in the file
    assert sum(len(s) for s in sentences) == 25147  # lines whose id is a plain number
    assert all(0 <= head <= len(s) for s in sentences for head in s.heads)
