"""The heading heuristic of find_sections, on text as pypdf extracts it."""

from __future__ import annotations

import pytest

from services.pioneer.steps.sections import classify, find_sections


@pytest.mark.parametrize(
    ("line", "kind", "level"),
    [
        ("1. Introducción", "numbered", 1),
        ("1.2 Alcance del proyecto", "numbered", 2),
        ("2.3.1 Detalles", "numbered", 3),
        ("10 Conclusions", "numbered", 1),
        ("Capítulo 2: Alcance", "keyword", 1),
        ("CAPÍTULO 3", "keyword", 1),
        ("CHAPTER IV", "keyword", 1),
        ("Sección 3.1 Datos", "keyword", 1),
        ("Anexo B - Tablas", "keyword", 1),
        ("Chapter 7. The End", "keyword", 1),
        ("INTRODUCCIÓN", "caps", 1),
        ("RESUMEN EJECUTIVO", "caps", 1),
        ("II. MARCO TEÓRICO", "caps", 1),
    ],
)
def test_headings(line: str, kind: str, level: int) -> None:
    assert classify(line) == (kind, level)


@pytest.mark.parametrize(
    "line",
    [
        "1.5 kg de harina",  # a quantity, lower-case after it
        "2024 fue un buen año",  # a year
        "4.500.000 EUR",  # an amount
        "3. El contrato se firmó el lunes.",  # a sentence
        "Section 3 of the contract states",  # prose that starts with a keyword
        "capítulo 1",  # not capitalised
        "Introducción ........ 3",  # a table-of-contents entry
        "1. Alcance . . . . . . 7",
        "USA",  # an acronym, not a heading
        "ID: 12345-ABCD-9876",  # caps, but mostly not letters
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
        "",
        "A" * 121,
    ],
)
def test_not_headings(line: str) -> None:
    assert classify(line) is None


def test_sections_with_their_pages_and_running_headers_left_out() -> None:
    pages = [
        "INFORME ANUAL\nCAPÍTULO 1\nINTRODUCCIÓN\nTexto normal.\nPÁGINA 1 DE 4",
        "INFORME ANUAL\n1.1   Alcance\nmás texto, en minúsculas.\nPÁGINA 2 DE 4",
        "INFORME ANUAL\nCapítulo 2\nResultados finales\nPÁGINA 3 DE 4",
        "INFORME ANUAL\nSin títulos aquí.\nPÁGINA 4 DE 4",
    ]
    found = [(s.title, s.page, s.kind, s.level) for s in find_sections(pages)]
    assert found == [
        # A keyword heading alone on its line takes the next one as its title.
        ("CAPÍTULO 1 INTRODUCCIÓN", 1, "keyword", 1),
        # Whitespace collapsed.
        ("1.1 Alcance", 2, "numbered", 2),
        ("Capítulo 2 Resultados finales", 3, "keyword", 1),
    ]


def test_a_heading_repeated_on_two_pages_is_kept_but_not_on_three() -> None:
    twice = ["RESUMEN\nuno.", "RESUMEN\ndos."]
    assert [s.page for s in find_sections(twice)] == [1, 2]
    assert find_sections([*twice, "RESUMEN\ntres."]) == []


def test_a_keyword_heading_followed_by_prose_keeps_its_own_title() -> None:
    found = find_sections(["Capítulo 4\nEste capítulo trata de muchas cosas distintas, y sigue."])
    assert [s.title for s in found] == ["Capítulo 4"]
