"""The synthetic loan book's vocabularies, their shares, and the schema of its frames.

The category vocabularies and the shares the generator draws them with (calibrated to the real
LendingClub 2016Q1 extract), the model-input `SCHEMA` with its risk directions and reason texts,
and `COLUMNS`, the column order of every frame `loanops.data.synthetic.generate` returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from loanops.data import INCOME_BAND_EDGES
from loanops.schema import Feature, FeatureSchema, Segment, Target

TERMS = ("36", "60")
GRADES = tuple("ABCDEFG")
SUB_GRADES = tuple(f"{grade}{step}" for grade in GRADES for step in range(1, 6))
REFERENCE_GRADE_MIX: Mapping[str, float] = MappingProxyType(
    {"A": 0.20, "B": 0.30, "C": 0.27, "D": 0.13, "E": 0.065, "F": 0.027, "G": 0.008}
)
"""Grade shares on the no-drift reference draw, which fix the underwriting cut-offs."""

# Shares of the stated lengths in the real 2016Q1 extract (emp_unk excluded; nulls drawn apart).
EMP_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "< 1 year": 0.0744,
        "1 year": 0.0589,
        "2 years": 0.0906,
        "3 years": 0.0780,
        "4 years": 0.0584,
        "5 years": 0.0601,
        "6 years": 0.0396,
        "7 years": 0.0339,
        "8 years": 0.0477,
        "9 years": 0.0428,
        "10+ years": 0.3502,
    }
)
EMP_LENGTHS = tuple(EMP_WEIGHTS)

HOME_OWNERSHIPS = ("MORTGAGE", "RENT", "OWN")
VERIFICATION_STATUSES = ("Not Verified", "Source Verified", "Verified")
VERIFICATION_WEIGHTS = (0.348, 0.380, 0.272)

PURPOSE_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "debt_consolidation": 0.51,
        "credit_card": 0.23,
        "other": 0.09,
        "home_improvement": 0.07,
        "major_purchase": 0.028,
        "small_business": 0.015,
        "car": 0.015,
        "medical": 0.014,
        "moving": 0.009,
        "vacation": 0.010,
        "house": 0.009,
    }
)
PURPOSES = tuple(PURPOSE_WEIGHTS)
# Shares in the real 2016Q1 extract. LendingClub did not lend in Iowa; IA gets the smallest
# observed share so that the vocabulary covers all 50 states and DC.
STATE_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "CA": 0.1343, "TX": 0.0913, "NY": 0.0778, "FL": 0.0742, "IL": 0.0427, "NJ": 0.0354,
        "OH": 0.0333, "GA": 0.0325, "PA": 0.0303, "NC": 0.0296, "VA": 0.0295, "MI": 0.0265,
        "AZ": 0.0226, "MA": 0.0222, "MD": 0.0213, "WA": 0.0203, "CO": 0.0178, "IN": 0.0177,
        "TN": 0.0171, "MN": 0.0170, "MO": 0.0158, "WI": 0.0147, "CT": 0.0145, "NV": 0.0133,
        "OR": 0.0125, "LA": 0.0121, "AL": 0.0117, "SC": 0.0111, "KY": 0.0108, "OK": 0.0089,
        "KS": 0.0085, "AR": 0.0082, "NM": 0.0079, "MS": 0.0064, "UT": 0.0056, "NH": 0.0053,
        "HI": 0.0052, "RI": 0.0045, "ME": 0.0037, "NE": 0.0037, "WV": 0.0031, "DE": 0.0027,
        "AK": 0.0026, "ND": 0.0025, "ID": 0.0021, "MT": 0.0021, "DC": 0.0019, "WY": 0.0018,
        "SD": 0.0017, "VT": 0.0016, "IA": 0.0016,
    }
)  # fmt: skip
ADDR_STATES = tuple(sorted(STATE_WEIGHTS))
PROTECTED_GROUPS = ("majority", "minority")


def _count(name: str, description: str, maximum: float) -> Feature:
    return Feature(name=name, kind="int", description=description, minimum=0, maximum=maximum)


def _category(name: str, categories: tuple[str, ...], description: str) -> Feature:
    return Feature(name=name, kind="category", categories=categories, description=description)


SCHEMA = (
    FeatureSchema(
        name="synthetic",
        target=Target(name="default", positive=1, negative=0),
        applicant_key="id",
        issue_date="issue_d",
        features=(
            Feature(
                name="loan_amnt",
                kind="int",
                minimum=1_000,
                maximum=40_000,
                description="Amount applied for, in USD, a multiple of 25.",
            ),
            _category("term", TERMS, "Loan term in months."),
            Feature(
                name="int_rate",
                kind="float",
                minimum=5,
                maximum=31,
                description="Interest rate, in percent, set by the lender from the sub-grade.",
            ),
            Feature(
                name="installment",
                kind="float",
                minimum=0,
                maximum=2_500,
                description="Monthly payment, in USD, of the fully amortising loan.",
            ),
            _category("grade", GRADES, "Lender-assigned risk grade, A (safest) to G."),
            _category(
                "sub_grade", SUB_GRADES, "Lender-assigned risk sub-grade, A1 (safest) to G5."
            ),
            Feature(
                name="emp_length",
                kind="category",
                categories=EMP_LENGTHS,
                nullable=True,
                description="Years in current employment; null when not stated.",
            ),
            _category(
                "home_ownership", HOME_OWNERSHIPS, "Home ownership status given by the borrower."
            ),
            Feature(
                name="annual_inc",
                kind="float",
                minimum=0,
                maximum=10_000_000,
                description="Self-reported annual income, in USD.",
            ),
            _category(
                "verification_status",
                VERIFICATION_STATUSES,
                "Whether the lender verified the income, or its source.",
            ),
            _category("purpose", PURPOSES, "Purpose of the loan given by the borrower."),
            _category(
                "addr_state", ADDR_STATES, "Borrower's state, two-letter code (50 states and DC)."
            ),
            Feature(
                name="dti",
                kind="float",
                minimum=0,
                maximum=100,
                description="Monthly debt payments, excluding mortgage and this loan, over monthly "
                "income, in percent.",
            ),
            Feature(
                name="fico_range_low",
                kind="int",
                minimum=660,
                maximum=845,
                description="Lower bound of the borrower's FICO range at origination, "
                "a multiple of 5; 660 is the lender's floor.",
            ),
            Feature(
                name="revol_util",
                kind="float",
                minimum=0,
                maximum=150,
                description="Revolving line utilisation, in percent of available credit.",
            ),
            _count("delinq_2yrs", "30+ days past-due incidents in the past 2 years.", 50),
            _count(
                "inq_last_6mths",
                "Credit inquiries in the past 6 months, excluding auto and mortgage.",
                50,
            ),
            _count("pub_rec", "Derogatory public records.", 50),
            _count("open_acc", "Open credit lines in the borrower's credit file.", 100),
            _count("total_acc", "Credit lines ever opened in the borrower's credit file.", 200),
        ),
    )
    .with_risk(
        {
            "loan_amnt": "increasing",
            "int_rate": "increasing",
            "installment": "increasing",
            "annual_inc": "decreasing",
            "dti": "increasing",
            "fico_range_low": "decreasing",
            "revol_util": "increasing",
            "delinq_2yrs": "increasing",
            "inq_last_6mths": "increasing",
            "pub_rec": "increasing",
        }
    )
    .with_reasons(
        {
            "loan_amnt": "Loan amount is large",
            "term": "Loan term is long",
            "int_rate": "Interest rate for the loan is high",
            "installment": "Monthly payment is high",
            "grade": "Credit grade is low",
            "sub_grade": "Credit grade is low",
            "emp_length": "Length of employment is short or unknown",
            "home_ownership": "Home ownership status",
            "annual_inc": "Income is low",
            "verification_status": "Income verification status",
            "purpose": "Purpose of the loan",
            "addr_state": "State of residence",
            "dti": "Debt-to-income ratio is high",
            "fico_range_low": "Credit score is low",
            "revol_util": "Revolving credit utilisation is high",
            "delinq_2yrs": "Delinquencies in the last 2 years",
            "inq_last_6mths": "Too many credit inquiries in the last 6 months",
            "pub_rec": "Derogatory public records",
            "open_acc": "Number of open credit lines",
            "total_acc": "Number of credit lines ever opened",
        }
    )
    .with_segments(
        Segment(
            name="protected group",
            column="protected_group",
            use="fair_lending",
            description="A stand-in protected class, never a model input.",
        ),
        Segment(name="income band", column="annual_inc", use="reporting", edges=INCOME_BAND_EDGES),
        Segment(name="grade", column="grade", use="reporting"),
        Segment(name="term", column="term", use="reporting"),
    )
)
"""The model inputs and review segments. The frame also carries `id`, `issue_d`,
`label_available_d`, `protected_group` and `pd_true`."""

COLUMNS = (
    "id",
    "issue_d",
    "label_available_d",
    *SCHEMA.feature_names,
    "protected_group",
    "default",
    "pd_true",
)
