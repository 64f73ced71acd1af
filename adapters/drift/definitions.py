"""What each drift figure means: names (Azure ML's), definitions (with the log base), thresholds.

The definitions are the ones in DESIGN.md section 4, written so that any two implementations
agree to 1e-9. Cards, the command-line table and the JSON all take their wording from here, so a
figure is never shown without saying what it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Kind = Literal["numerical", "categorical"]

NORMALIZED_WASSERSTEIN = "normalized_wasserstein_distance"
JENSEN_SHANNON = "jensen_shannon_distance"
PSI = "population_stability_index"
KOLMOGOROV_SMIRNOV = "two_sample_kolmogorov_smirnov_test"
CHI_SQUARED = "pearsons_chi_squared_test"
NULL_VALUE_RATE = "null_value_rate"
OUT_OF_BOUNDS_RATE = "out_of_bounds_rate"
NDCG = "normalized_discounted_cumulative_gain"
ACCURACY = "accuracy"
PRECISION = "precision"
RECALL = "recall"
F1 = "f1_score"
AUC = "auc"
MAE = "mean_absolute_error"
MSE = "mean_squared_error"
RMSE = "root_mean_squared_error"
# the importances NDCG compares, per feature (Azure's component logs them as BaselineFeatureImportance and
# ProductionFeatureImportance beside the NDCG)
BASELINE_IMPORTANCE = "baseline_feature_importance"
PRODUCTION_IMPORTANCE = "production_feature_importance"

NUMERICAL_DRIFT_METRICS = (NORMALIZED_WASSERSTEIN, JENSEN_SHANNON, PSI, KOLMOGOROV_SMIRNOV)
CATEGORICAL_DRIFT_METRICS = (JENSEN_SHANNON, PSI, CHI_SQUARED)
DATA_QUALITY_METRICS = (NULL_VALUE_RATE, OUT_OF_BOUNDS_RATE)
ALL_METRICS = (NORMALIZED_WASSERSTEIN, JENSEN_SHANNON, PSI, KOLMOGOROV_SMIRNOV, CHI_SQUARED,
               NULL_VALUE_RATE, OUT_OF_BOUNDS_RATE)

ATTRIBUTION_METRICS = (NDCG,)
CLASSIFICATION_METRICS = (ACCURACY, PRECISION, RECALL, F1, AUC)
REGRESSION_METRICS = (MAE, MSE, RMSE)
PERFORMANCE_METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS

# Azure ML's data drift signal judges a feature by one metric per data type (its defaults).
PRIMARY_METRIC: dict[str, str] = {"numerical": NORMALIZED_WASSERSTEIN, "categorical": JENSEN_SHANNON}

# p-values breach when they fall below their threshold; every other figure when it rises above.
P_VALUES = frozenset({KOLMOGOROV_SMIRNOV, CHI_SQUARED})
# What breaches *below* its threshold: the p-values, and the figures where higher is better (NDCG and the
# classification scores). The same rule as adapters.azureml.monitoring.breaches (a test keeps them equal).
BREACH_BELOW = P_VALUES | frozenset({NDCG, ACCURACY, PRECISION, RECALL, F1, AUC})

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25

BINS = "k = ⌈log2(min(n_r, n_c)) + 1⌉ equal-width bins over [min, max] of both samples (np.histogram)"

DEFINITIONS: dict[str, str] = {
    NORMALIZED_WASSERSTEIN:
        "Wasserstein-1 distance between reference and current values (scipy.stats.wasserstein_distance) "
        "divided by max(population standard deviation of the reference, 0.001)",
    JENSEN_SHANNON:
        "Jensen-Shannon distance, log base 2 (0 = same distribution, 1 = disjoint), no smoothing, over "
        f"{BINS} (numerical) or the categories seen in either sample (categorical); "
        "Evidently's natural-log figure is 0.8326 times this one",
    PSI:
        "population stability index Σ (q_i − p_i)·ln(q_i / p_i), natural log, with 1 added to every "
        f"bin's count: p_i = (count_r,i + 1)/(n_r + k), q_i = (count_c,i + 1)/(n_c + k); {BINS} (numerical) "
        "or one bin per category (categorical); bands: < 0.1 none, 0.1 to 0.25 moderate, > 0.25 significant",
    KOLMOGOROV_SMIRNOV:
        "p-value of the two-sided two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp, default "
        "method: exact up to 10,000 values per side, asymptotic above)",
    CHI_SQUARED:
        "p-value of Pearson's chi-squared test on the 2 × k table of reference and current category "
        "counts, no continuity correction (scipy.stats.chi2_contingency, correction=False)",
    NULL_VALUE_RATE:
        "share of current rows that are missing (an empty field, a null, NaN or ±inf)",
    OUT_OF_BOUNDS_RATE:
        "share of current non-null values outside [min, max] of the reference (numerical; values that "
        "are not numbers count as outside) or not seen in the reference (categorical)",
    NDCG:
        "normalized discounted cumulative gain of the current window's feature importance ranking against the "
        "reference's, as Azure ML's feature attribution drift computes it (sklearn.metrics.ndcg_score with the "
        "reference importances as the true relevance and the current ones as the scores, every feature, tied "
        "scores averaged; 1 = same ranking, lower is worse). Importance of a feature = |Pearson correlation| "
        "with the target (numerical) or the correlation ratio η of the target across its categories "
        "(categorical), the target being the label (1 for the positive class of two) or the prediction",
    BASELINE_IMPORTANCE:
        "the feature's importance in the reference window (the relevance NDCG ranks by)",
    PRODUCTION_IMPORTANCE:
        "the feature's importance in the current window (the score NDCG ranks by)",
    ACCURACY:
        "share of rows whose predicted class equals the label (sklearn.metrics.accuracy_score)",
    PRECISION:
        "tp / (tp + fp): for two classes of the positive class, for more the macro average over every class "
        "seen in labels or predictions (sklearn.metrics.precision_score, zero_division=0)",
    RECALL:
        "tp / (tp + fn): for two classes of the positive class, for more the macro average over every class "
        "seen in labels or predictions (sklearn.metrics.recall_score, zero_division=0)",
    F1:
        "2·tp / (2·tp + fp + fn), averaged as precision and recall are (sklearn.metrics.f1_score, "
        "zero_division=0)",
    AUC:
        "area under the ROC curve of the positive class's score, two classes only: the Mann-Whitney rank "
        "statistic (Σ ranks of positives − n₊(n₊+1)/2) / (n₊·n₋), tied scores given their average rank "
        "(sklearn.metrics.roc_auc_score)",
    MAE:
        "mean absolute error, mean |label − prediction| (sklearn.metrics.mean_absolute_error)",
    MSE:
        "mean squared error, mean (label − prediction)² (sklearn.metrics.mean_squared_error)",
    RMSE:
        "root mean squared error, √(mean (label − prediction)²) (sklearn.metrics.root_mean_squared_error)",
}

SHORT_NAMES: dict[str, str] = {
    NORMALIZED_WASSERSTEIN: "NWD",
    JENSEN_SHANNON: "JSD",
    PSI: "PSI",
    KOLMOGOROV_SMIRNOV: "KS p",
    CHI_SQUARED: "chi2 p",
    NULL_VALUE_RATE: "null",
    OUT_OF_BOUNDS_RATE: "OOB",
    NDCG: "NDCG",
    BASELINE_IMPORTANCE: "importance (reference)",
    PRODUCTION_IMPORTANCE: "importance (current)",
    ACCURACY: "accuracy",
    PRECISION: "precision",
    RECALL: "recall",
    F1: "F1",
    AUC: "AUC",
    MAE: "MAE",
    MSE: "MSE",
    RMSE: "RMSE",
}


@dataclass(frozen=True)
class Thresholds:
    """Where each metric breaches. Defaults: Azure ML's (distances 0.1, data quality 0.0), the
    seed's PSI band for "significant" (0.25), the usual 0.05 for the tests' p-values, Azure's 0.9 for
    NDCG; the performance figures' defaults are the bot's (Azure asks for them)."""

    normalized_wasserstein_distance: float = 0.1
    jensen_shannon_distance: float = 0.1
    population_stability_index: float = PSI_SIGNIFICANT
    two_sample_kolmogorov_smirnov_test: float = 0.05
    pearsons_chi_squared_test: float = 0.05
    null_value_rate: float = 0.0
    out_of_bounds_rate: float = 0.0
    # Azure ML's default for feature attribution drift; performance has no Azure default: these are the bot's
    normalized_discounted_cumulative_gain: float = 0.9
    accuracy: float = 0.9
    precision: float = 0.7
    recall: float = 0.7
    f1_score: float = 0.7
    auc: float = 0.8
    mean_absolute_error: float = 1.0
    mean_squared_error: float = 1.0
    root_mean_squared_error: float = 1.0

    def of(self, metric: str) -> float:
        return float(getattr(self, metric))

    def breached(self, metric: str, value: float | None) -> bool:
        if value is None:
            return False
        threshold = self.of(metric)
        return value < threshold if metric in BREACH_BELOW else value > threshold

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


DEFAULT_THRESHOLDS = Thresholds()


def psi_band(value: float | None) -> str | None:
    """The seed's PSI bands: < 0.1 none, 0.1 to 0.25 moderate, > 0.25 significant."""
    if value is None:
        return None
    if value < PSI_MODERATE:
        return "none"
    return "moderate" if value <= PSI_SIGNIFICANT else "significant"


def breach_rule(metric: str, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> str:
    """"> 0.1" or "< 0.05": how a figure of this metric breaches, for legends and cards."""
    return f"{'<' if metric in BREACH_BELOW else '>'} {thresholds.of(metric):g}"


# How far past its threshold a figure is, in words (cards and the digest): the relative distance
# |value − threshold| / threshold, with these limits for "slightly" and "far".
SLIGHTLY_BELOW, FAR_BELOW = 0.05, 0.2        # metrics that breach below (higher is better)
SLIGHTLY_ABOVE, FAR_ABOVE = 0.25, 1.0        # metrics that breach above (distances, rates, errors)
LEVEL_RULE = ("Level: slightly / clearly / far past the threshold = by < 5 %, < 20 %, more (higher is better) "
              "or < 25 %, < 100 %, more (the others).")


def level_words(metric: str, value: float | None, threshold: float | None) -> str:
    """"within threshold", "slightly below threshold", "far above threshold", ... (PSI: its band)."""
    if value is None:
        return "undefined"
    if metric == PSI:
        return f"{psi_band(value)} (PSI band)"
    if threshold is None:
        return ""
    below = metric in BREACH_BELOW
    if not (value < threshold if below else value > threshold):
        return "within threshold"
    side = "below" if below else "above"
    if threshold == 0:
        return f"{side} threshold"
    distance = abs(value - threshold) / abs(threshold)
    slightly, far = (SLIGHTLY_BELOW, FAR_BELOW) if below else (SLIGHTLY_ABOVE, FAR_ABOVE)
    degree = "slightly" if distance < slightly else "clearly" if distance < far else "far"
    return f"{degree} {side} threshold"
