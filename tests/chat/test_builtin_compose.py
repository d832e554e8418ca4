"""What the built-in answerer quotes and how it sets it out: the key sentence first, tables read as rows with their
header (never as code), numbered steps kept whole, table rules and note labels left out (issue #15)."""
from __future__ import annotations

from dataclasses import dataclass

from chat.providers.builtin import builtin_compose, split_units


@dataclass
class Source:
    text: str
    dense_score: float = 0.6


RETURN_COSTS = """| Where you live | Return method | Cost |
|---|---|---|
| United Kingdom (incl. Northern Ireland) | Evri ParcelShop or InPost locker | Free |
| Netherlands, Belgium, Germany, France, Austria | DHL or PostNL drop-off point | Free |
| Luxembourg, Ireland, Denmark, Sweden, Finland, Spain, Portugal, Italy | DHL drop-off point | €6.50, deducted from your refund |
| Norway, Switzerland | You arrange and pay for return postage | Your own cost |

For Norway and Switzerland, please send the parcel to our EU returns centre in Tilburg and write your return number
on the outside of the box. Use a tracked service; we can't refund items that are lost on the way back to us."""

DELIVERY = """Service | Delivery time | Cost

Standard (Evri) | 2–4 working days | £3.95, free on orders over £50

Next Day (DPD) | Next working day if ordered by 13:00 Mon–Fri | £6.95

Saturday (DPD) | Saturday, if ordered by 13:00 Friday | £9.95

We deliver to BFPO addresses using Standard delivery only; please allow up to 15 working days."""

STEPS = """Returning an item takes a few minutes:

1. Go to the returns page and enter your order number and email address.
2. Choose the items, the quantity and a reason for the return.
3. Print the return label, or save the QR code to your phone.
4. Pack the items securely and drop the parcel off within 14 days of registering the return.

Please don't send returns to our office address without registering them."""


def test_a_markdown_table_row_is_read_with_its_header_not_set_as_code():
    answer = builtin_compose(question="Do I have to pay to send a return back from Spain?",
                             sources=[Source(RETURN_COSTS)]).text

    assert "`" not in answer and "|" not in answer and "---" not in answer
    assert ("- Luxembourg, Ireland, Denmark, Sweden, Finland, Spain, Portugal, Italy — Return method: DHL drop-off "
            "point; Cost: €6.50, deducted from your refund") in answer.splitlines()


def test_a_table_from_an_html_page_gets_its_header_too():
    units = split_units(DELIVERY, 0)

    rows = [unit.text for unit in units if unit.kind == "row"]
    assert rows == [
        "Standard (Evri) — Delivery time: 2–4 working days; Cost: £3.95, free on orders over £50",
        "Next Day (DPD) — Delivery time: Next working day if ordered by 13:00 Mon–Fri; Cost: £6.95",
        "Saturday (DPD) — Delivery time: Saturday, if ordered by 13:00 Friday; Cost: £9.95",
    ]
    assert len({unit.block for unit in units if unit.kind == "row"}) == 1
    answer = builtin_compose(question="How much is next day delivery?", sources=[Source(DELIVERY)]).text
    assert "- Next Day (DPD) — Delivery time: Next working day if ordered by 13:00 Mon–Fri; Cost: £6.95" in answer


def test_a_csv_row_is_a_fact_not_code():
    row = ("sku: LO-JK-101; product: Skiddaw 2.5L Waterproof Jacket (Men's); category: Waterproof jackets; "
           "price_eur: 149.00; in_stock: yes")
    answer = builtin_compose(question="How much is the Skiddaw jacket in euros?", sources=[Source(row)]).text

    assert answer == f"- {row} [1]"


def test_a_numbered_step_list_is_quoted_whole_with_its_introduction():
    answer = builtin_compose(question="How do I print the return label?", sources=[Source(STEPS)]).text

    lines = answer.splitlines()
    assert lines[0] == "Returning an item takes a few minutes:"
    assert [line[:3] for line in lines[1:5]] == ["1. ", "2. ", "3. ", "4. "]
    assert "Print the return label" in lines[3]


def test_list_items_stay_on_their_own_lines():
    text = ("Refunds:\n- We process your refund within **5 working days** of your return arriving.\n"
            "- Card refunds usually show on your statement within 3–10 working days.\n"
            "- PayPal refunds usually arrive within 24 hours.")
    answer = builtin_compose(question="How long until my refund arrives on PayPal?", sources=[Source(text)]).text

    assert "- PayPal refunds usually arrive within 24 hours." in answer.splitlines()[-1]
    assert ". - " not in answer


def test_table_rules_note_labels_and_captions_are_left_out():
    text = ("Use Renumber Subaccounts to rewrite the account codes for all children of the current account.\n\n"
            "Table 5.2. Starting account numbers.\n\nCode\n|\n\nName\n\n10\n|\n\nColors\n\n"
            "=====================================\n| Note\n| Note on double quotes\n"
            "If you set an interval value of 5 and click Renumber, the codes are spaced by 5.")
    units = split_units(text, 0)

    assert [unit.text for unit in units] == [
        "Use Renumber Subaccounts to rewrite the account codes for all children of the current account.",
        "If you set an interval value of 5 and click Renumber, the codes are spaced by 5.",
    ]
    answer = builtin_compose(question="how do I renumber account codes with an interval", sources=[Source(text)]).text
    assert "`" not in answer and "Note" not in answer and "Table 5.2" not in answer


def test_the_answer_opens_on_the_key_sentence_not_on_the_background_before_it():
    text = ("Larkspur Outdoor was founded in 1998 in Kendal, in the English Lake District. We sell clothing, tents "
            "and boots to walkers across the United Kingdom and the European Union. Our returns centres are in "
            "Kendal and Tilburg. We process your refund within 5 working days of your return arriving at our "
            "returns centre. You will get an email when it's done.")
    answer = builtin_compose(question="How long does my refund take?", sources=[Source(text)]).text

    assert answer.startswith("We process your refund within 5 working days")
    assert "founded in 1998" not in answer


def test_a_sentence_introducing_the_key_one_comes_with_it():
    text = ("Packages are installed with apt. The default firewall keeps its rules in one file. "
            "To load the firewall rules at boot, enable the service:\n"
            "# systemctl enable nftables.service\n"
            "The rules are then read from /etc/nftables.conf at every boot.")
    answer = builtin_compose(question="How do I load my firewall rules at boot?", sources=[Source(text)]).text

    assert answer.startswith("To load the firewall rules at boot, enable the service:\n`# systemctl enable nftables.service`")
