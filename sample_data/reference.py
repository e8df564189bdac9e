"""Built-in reference lists of the sample generator: names, places, code lists, rates, prices.

Everything here is synthetic or public reference material (ICD-10-CM codes, role costs of
the order published in salary surveys); nothing comes from a patient record. Rates are
per member-month unless a name says otherwise.
"""

# --- network ------------------------------------------------------------------------------

NETWORK_NAME = "Lakeside Value Care Network"

# (practice_id, name, share of patients, ZIPs with their area-deprivation decile)
PRACTICES = (
    ("PR01", "Riverside Family Medicine", 0.64,
     (("55101", 3), ("55102", 2), ("55104", 5), ("55105", 1), ("55106", 6), ("55107", 4), ("55116", 2))),
    ("PR02", "Hillcrest Community Health", 0.36,
     (("55117", 8), ("55119", 7), ("55130", 10), ("55106", 6), ("55103", 9), ("55411", 9))),
)

SUBGROUPS = ("healthy", "at_risk", "chronic", "complex", "frail")
HEALTHY, AT_RISK, CHRONIC, COMPLEX, FRAIL = range(5)

# (team_id, practice index, name, subgroup column value ("" = mixed), latent states served)
TEAMS = (
    ("TM01", 0, "Riverside Wellness Team", "healthy", (HEALTHY,)),
    ("TM02", 0, "Riverside Prevention Team", "at_risk", (AT_RISK,)),
    ("TM03", 0, "Riverside Chronic Care Team", "chronic", (CHRONIC,)),
    ("TM04", 0, "Riverside Complex Care Team", "complex", (COMPLEX,)),
    ("TM05", 0, "Riverside Frail Elderly & Home Care Team", "frail", (FRAIL,)),
    ("TM06", 1, "Hillcrest Team A (healthy and at risk)", "", (HEALTHY, AT_RISK)),
    ("TM07", 1, "Hillcrest Team B (chronic, complex and frail)", "", (CHRONIC, COMPLEX, FRAIL)),
)
BETTER_TEAM, WORSE_TEAM, SLOW_URGENT_TEAM, SPIKE_TEAM = 2, 6, 5, 3  # indexes into TEAMS

# Fully loaded annual cost (salary + benefits), USD: (low, high). Orders of magnitude from
# MGMA / BLS OEWS 2023 medians plus ~25-30 % benefits.
ROLE_COST_USD = {
    "physician": (300_000, 350_000),
    "nurse_practitioner": (140_000, 160_000),
    "registered_nurse": (102_000, 118_000),
    "medical_assistant": (46_000, 54_000),
    "care_manager": (84_000, 96_000),
    "behavioral_health": (102_000, 118_000),
    "pharmacist": (142_000, 158_000),
    "front_desk": (42_000, 48_000),
}
ROLES = tuple(ROLE_COST_USD)
FULL_TIME_HOURS = 2080.0
# Share of paid time that is practical capacity (80 %, the TDABC default of Kaplan & Anderson,
# Harvard Business Review 2004), and the share of
# that capacity each team actually uses (the rest is unused capacity on the cost pages).
PRACTICAL_CAPACITY = 0.8
TEAM_UTILISATION = (0.72, 0.70, 0.82, 0.72, 0.68, 0.72, 0.58)

# --- people -------------------------------------------------------------------------------

GIVEN_FEMALE = ("Amara", "Beatriz", "Chloe", "Dana", "Elena", "Fatima", "Grace", "Hana", "Imani", "Julia",
                "Keiko", "Lucia", "Maya", "Nadia", "Olivia", "Priya", "Rosa", "Sofia", "Tanya", "Yara")
GIVEN_MALE = ("Aaron", "Bilal", "Carlos", "Daniel", "Emeka", "Felix", "Gabriel", "Hiro", "Isaac", "Jamal",
              "Kevin", "Luis", "Marcus", "Nikolai", "Omar", "Pedro", "Rahul", "Samuel", "Tomas", "Wei")
FAMILY = ("Abbott", "Baptiste", "Castillo", "Delgado", "Eriksen", "Fontaine", "Garcia", "Hoffman", "Ibarra",
          "Jensen", "Kowalski", "Lindqvist", "Mbeki", "Nguyen", "Okafor", "Patel", "Quintero", "Rahman",
          "Sorensen", "Tanaka", "Underwood", "Valdez", "Whitaker", "Xu", "Yamada", "Zimmerman")

# Adult age bands (low, high inclusive, share), shaped like an adult primary-care panel
# (US Census 2020 adult pyramid, older ages over-represented as they use primary care more).
AGE_BANDS = ((18, 29, 0.16), (30, 44, 0.23), (45, 64, 0.33), (65, 74, 0.15), (75, 84, 0.09), (85, 100, 0.04))
SEXES = (("female", 0.535), ("male", 0.46), ("other", 0.003), ("unknown", 0.002))
# OMB race categories; shares by practice (Hillcrest serves a more diverse, deprived area).
RACES = ("White", "Black or African American", "Asian", "American Indian or Alaska Native",
         "Native Hawaiian or Other Pacific Islander", "Other", "unknown")
RACE_SHARES = ((0.72, 0.08, 0.08, 0.01, 0.005, 0.05, 0.055), (0.45, 0.28, 0.07, 0.02, 0.01, 0.10, 0.07))
HISPANIC_SHARE = (0.10, 0.27)
OTHER_LANGUAGES = (("Vietnamese", 0.3), ("Somali", 0.25), ("Chinese", 0.2), ("Arabic", 0.15), ("Russian", 0.1))

# --- conditions ---------------------------------------------------------------------------

# Starting needs state: cut points (quantiles) of the latent need score between healthy, at
# risk, chronic and complex-or-frail. Set so that, after in-window changes and deaths and once
# the subgroup rules read the data (top-decile risk scores and repeat acute care move about 2-3 %
# of patients, mostly chronic, into complex), the mix stays near the paper's 40 / 30 / 20 / 10 %.
NEEDS_QUANTILES = (0.405, 0.70, 0.898)

# Chronic condition groups: (group, ICD-10-CM code, description, relative weight at age 50,
# weight change per year of age (log scale), specialty). Breast cancer is drawn for women only.
CHRONIC_GROUPS = (
    ("diabetes", "E11.9", "Type 2 diabetes mellitus without complications", 1.0, 0.030, "endocrinology"),
    ("hypertension", "I10", "Essential (primary) hypertension", 1.8, 0.035, "cardiology"),
    ("copd", "J44.9", "Chronic obstructive pulmonary disease, unspecified", 0.35, 0.045, "pulmonology"),
    ("asthma", "J45.909", "Unspecified asthma, uncomplicated", 0.45, -0.020, "pulmonology"),
    ("heart_failure", "I50.9", "Heart failure, unspecified", 0.18, 0.070, "cardiology"),
    ("ckd", "N18.30", "Chronic kidney disease, stage 3 unspecified", 0.25, 0.060, "nephrology"),
    ("depression", "F33.1", "Major depressive disorder, recurrent, moderate", 0.75, -0.015, "psychiatry"),
    ("atrial_fibrillation", "I48.91", "Unspecified atrial fibrillation", 0.15, 0.075, "cardiology"),
    ("cad", "I25.10", "Atherosclerotic heart disease of native coronary artery without angina", 0.30, 0.055, "cardiology"),
    ("rheumatoid_arthritis", "M06.9", "Rheumatoid arthritis, unspecified", 0.08, 0.010, "rheumatology"),
    ("hypothyroidism", "E03.9", "Hypothyroidism, unspecified", 0.40, 0.010, "endocrinology"),
    ("breast_cancer", "C50.919", "Malignant neoplasm of unspecified site of unspecified female breast", 0.07, 0.030, "oncology"),
)
# Groups that weigh heavily in the CMS-HCC model (V28 maps each to a payment HCC; hypertension,
# CAD, hypothyroidism and uncomplicated asthma map to none, diabetes to a small one). Multimorbid
# patients carry them far more often than people with one or two conditions, so the latent
# complex and frail patients are also the ones whose risk score is in the top decile.
SEVERE_GROUPS = ("copd", "heart_failure", "ckd", "depression", "atrial_fibrillation", "rheumatoid_arthritis",
                 "breast_cancer")
# Weight multiplier of the severe groups by latent state (healthy, at_risk, chronic, complex,
# frail); the at-risk value applies to a first chronic condition, the complex value to the
# conditions added when a chronic patient becomes complex.
SEVERE_GROUP_WEIGHT = (0.4, 0.4, 0.4, 8.0, 4.0)
DIABETES_COMPLICATED = ("E11.65", "Type 2 diabetes mellitus with hyperglycemia")
GROUP_INDEX = {g[0]: i for i, g in enumerate(CHRONIC_GROUPS)}

# Risk factors of the at-risk subgroup: (factor, code, description, base weight).
RISK_FACTORS = (
    ("obesity", "E66.9", "Obesity, unspecified", 0.40),
    ("tobacco", "Z72.0", "Tobacco use", 0.22),
    ("prediabetes", "R73.03", "Prediabetes", 0.22),
    ("elevated_bp", "R03.0", "Elevated blood-pressure reading, without diagnosis of hypertension", 0.25),
    ("hyperlipidaemia", "E78.5", "Hyperlipidemia, unspecified", 0.25),
)
TOBACCO_DEPENDENCE = ("F17.210", "Nicotine dependence, cigarettes, uncomplicated")
OBESITY, TOBACCO, PREDIABETES, ELEVATED_BP, HYPERLIPIDAEMIA = range(5)

# Frailty indicators (age >= 75) and long-term disability / institutional status (any age).
FRAILTY_CODES = (
    ("R29.6", "Repeated falls"),
    ("F03.90", "Unspecified dementia without behavioral disturbance"),
    ("G30.9", "Alzheimer's disease, unspecified"),
    ("Z74.01", "Bed confinement status"),
    ("Z74.09", "Other reduced mobility"),
    ("Z74.1", "Need for assistance with personal care"),
    ("R54", "Age-related physical debility"),
)
DISABILITY_CODES = (
    ("Z99.3", "Dependence on wheelchair"),
    ("Z59.3", "Problems related to living in residential institution"),
)

WELLNESS_DX = "Z00.00"  # encounter for general adult medical examination without abnormal findings
ED_DX = ("R07.9", "R10.9", "J06.9", "S93.401A", "N39.0", "R55", "M54.50", "S01.81XA")
URGENT_CARE_DX = ("J06.9", "J02.9", "N39.0", "S93.401A", "H66.90", "R05.9")
# Ambulatory-care-sensitive admission diagnoses (AHRQ Prevention Quality Indicators,
# PQI #01/05/07/08/11/12/14/15 and dehydration PQI #10), by chronic group where one applies.
ACSC_BY_GROUP = {"diabetes": "E11.65", "copd": "J44.1", "heart_failure": "I50.9", "hypertension": "I10", "asthma": "J45.901"}
ACSC_GENERAL = ("J18.9", "N39.0", "E86.0")
NON_ACSC_ADMISSION_DX = ("I21.4", "I63.9", "A41.9", "K92.2", "K35.80", "S72.001A")
OTHER_SPECIALTIES = ("dermatology", "orthopedics", "gastroenterology", "ophthalmology", "neurology", "urology")
# E-consult specialist answer time, days (low, high inclusive), and share resolved without a visit.
ECONSULT_RESPONSE_DAYS = {"dermatology": (1, 2), "endocrinology": (1, 4), "cardiology": (2, 5), "nephrology": (2, 6),
                          "pulmonology": (2, 5), "psychiatry": (3, 7), "rheumatology": (3, 7), "oncology": (1, 3),
                          "orthopedics": (2, 6), "gastroenterology": (2, 6), "ophthalmology": (2, 5),
                          "neurology": (3, 7), "urology": (2, 5)}
ECONSULT_RESOLVED_SHARE = {"dermatology": 0.75, "endocrinology": 0.72, "cardiology": 0.66, "nephrology": 0.70,
                           "pulmonology": 0.68, "psychiatry": 0.62, "rheumatology": 0.60, "oncology": 0.55,
                           "orthopedics": 0.58, "gastroenterology": 0.65, "ophthalmology": 0.60, "neurology": 0.64,
                           "urology": 0.66}

# --- utilisation ----------------------------------------------------------------------------

# Encounters per member-month by latent state (healthy, at_risk, chronic, complex, frail).
# Orders of magnitude: NAMCS office-visit rates, HCUP ED/inpatient rates per 1,000 by age and
# chronic-condition count (complex / frail adults ~ 350-550 admissions and ~ 900-1,000 ED visits
# per 1,000 per year; adults with no or one or two conditions ~ 70-190 ED visits per 1,000).
RATES = {
    "office_visit": (0.11, 0.18, 0.28, 0.42, 0.30),
    "virtual_visit": (0.03, 0.05, 0.08, 0.10, 0.04),
    "phone_call": (0.05, 0.08, 0.15, 0.35, 0.40),
    "portal_message": (0.14, 0.24, 0.40, 0.55, 0.20),
    "home_visit": (0.0, 0.0, 0.0, 0.02, 0.30),
    "group_visit": (0.0, 0.012, 0.02, 0.02, 0.0),
    "care_management": (0.0, 0.0, 0.04, 0.60, 0.70),
    "e_consult": (0.003, 0.006, 0.015, 0.03, 0.02),
    "specialist_visit": (0.04, 0.07, 0.15, 0.33, 0.22),
    "urgent_care": (0.010, 0.015, 0.020, 0.025, 0.015),
    "ed_visit": (0.006, 0.009, 0.016, 0.075, 0.085),
    "admission": (0.0010, 0.0020, 0.0050, 0.030, 0.036),
    "snf_stay": (0.0, 0.0, 0.0003, 0.002, 0.006),
    "pharmacy_fill": (0.20, 0.50, 1.50, 4.00, 4.50),
    "imaging_lab": (0.09, 0.15, 0.30, 0.60, 0.50),
}
# Repeat ED visits and admissions concentrate among complex and frail patients: their acute
# care scales with the individual need multiplier (gamma, mean 1, sd 0.7); for everyone else
# with need ** exponent (mostly one-off events), so few of them reach the complex subgroup's
# "2+ admissions / ED visits in 12 months".
ACUTE_KINDS = ("ed_visit", "admission")
ACUTE_NEED_EXPONENT = (0.25, 0.25, 0.25, 1.0, 1.0)
INTERNAL_KINDS = ("office_visit", "virtual_visit", "phone_call", "portal_message", "home_visit", "group_visit",
                  "care_management", "e_consult")
# Kinds whose rate is scaled by the team's utilisation multiplier (acute and specialist care).
TEAM_SENSITIVE_KINDS = ("specialist_visit", "urgent_care", "ed_visit", "admission", "snf_stay")
TEAM_UTILISATION_MULTIPLIER = (1.0, 1.0, 0.78, 1.0, 1.0, 1.05, 1.25)
READMISSION_SHARE = (0.08, 0.08, 0.12, 0.19, 0.21)  # 30-day readmissions (CMS HRRP range 15-22 %)
POST_ACUTE_SHARE = (0.02, 0.03, 0.08, 0.18, 0.35)  # admissions followed by a SNF stay
IN_NETWORK_SHARE = (0.91, 0.76)  # per practice: Hillcrest leaks more
# Facilities that bill the external claims (fictional): name, type, in the network. A claim is
# billed by a facility of the type its kind goes to, in or out of the network as the claim is
# (drawn from its own random stream, so the other generated values do not depend on it).
FACILITIES = (
    ("Riverside General Hospital", "hospital", True),
    ("St. Brendan Medical Center", "hospital", False),
    ("Lakeshore Regional Hospital", "hospital", False),
    ("Valley Skilled Nursing Center", "snf", True),
    ("Oak Park Rehabilitation and Nursing", "snf", False),
    ("Riverside Imaging Center", "imaging", True),
    ("Northgate Diagnostic Imaging", "imaging", False),
    ("Summit Outpatient Lab", "imaging", False),
    ("Hillcrest Specialty Physicians", "specialist", True),
    ("Summit Cardiology Associates", "specialist", False),
    ("Bayview Orthopedic Group", "specialist", False),
    ("Cedar Street Urgent Care", "urgent", True),
    ("QuickCare Walk-In Clinic", "urgent", False),
)
FACILITY_TYPE_OF_KIND = {"admission": "hospital", "ed_visit": "hospital", "snf_stay": "snf", "imaging_lab": "imaging",
                         "specialist_visit": "specialist", "urgent_care": "urgent"}  # fmt: skip
SPIKE_ADMISSION_MULTIPLIER = 6.0
# Claims payment lag after the service ends: (median days, lognormal sigma, min, max). Most claims
# are paid within 1-2 months, a few take up to about 6 (Medicare's prompt-payment rule pays clean
# claims within 30 days of receipt; resubmitted and disputed claims take longer).
PAID_LAG_DAYS = (30, 0.6, 5, 180)

# Paid amounts: (median USD, lognormal sigma, min, max) per kind; multiplied by STATE_PRICE.
PRICES = {
    "specialist_visit": (230, 0.30, 150, 400),
    "urgent_care": (180, 0.30, 100, 350),
    "ed_visit": (1700, 0.35, 1000, 3000),
    "admission": (15000, 0.30, 10000, 25000),
    "snf_stay": (11000, 0.20, 8000, 15000),
    "pharmacy_fill": (45, 1.0, 10, 600),
    "imaging_lab": (160, 0.9, 50, 800),
}
STATE_PRICE = (0.9, 0.95, 1.0, 1.15, 1.1)

# Staff minutes by activity kind: (role, probability, mean minutes, sd, alternative group).
# Rows of one alternative group (>0) are mutually exclusive (one clinician per visit).
MINUTES = {
    "office_visit": (("physician", 0.62, 25, 6, 1), ("nurse_practitioner", 0.38, 27, 6, 1),
                     ("medical_assistant", 1.0, 15, 4, 0), ("front_desk", 1.0, 10, 3, 0),
                     ("registered_nurse", 0.25, 10, 3, 0), ("pharmacist", 0.05, 15, 4, 0)),
    "virtual_visit": (("physician", 0.55, 15, 4, 1), ("nurse_practitioner", 0.45, 16, 4, 1),
                      ("medical_assistant", 0.8, 8, 2, 0), ("front_desk", 0.5, 4, 1.5, 0)),
    "phone_call": (("registered_nurse", 0.7, 11, 4, 1), ("care_manager", 0.2, 14, 5, 1),
                   ("physician", 0.1, 8, 3, 1), ("front_desk", 0.5, 4, 1.5, 0)),
    "portal_message": (("physician", 0.45, 4, 1.5, 1), ("nurse_practitioner", 0.25, 4, 1.5, 1),
                       ("registered_nurse", 0.3, 4, 1.5, 1), ("medical_assistant", 0.3, 2, 1, 0)),
    "home_visit": (("nurse_practitioner", 0.6, 60, 12, 1), ("physician", 0.4, 55, 12, 1),
                   ("registered_nurse", 0.5, 45, 10, 0), ("care_manager", 0.2, 20, 5, 0)),
    "group_visit": (("physician", 0.5, 12, 3, 1), ("nurse_practitioner", 0.5, 12, 3, 1),
                    ("behavioral_health", 0.6, 10, 3, 0), ("registered_nurse", 0.8, 10, 3, 0)),
    "care_management": (("care_manager", 1.0, 30, 10, 0), ("pharmacist", 0.2, 20, 6, 0),
                        ("behavioral_health", 0.15, 25, 8, 0), ("registered_nurse", 0.2, 12, 4, 0)),
    "e_consult": (("physician", 0.7, 10, 3, 1), ("nurse_practitioner", 0.3, 10, 3, 1), ("medical_assistant", 0.6, 5, 2, 0)),
}
UNRECORDED_MINUTES_SHARE = 0.13  # internal encounters left without minutes (costed by process maps)

# Medications (descriptions only; RxNorm codes are left blank rather than guessed).
DRUGS_BY_GROUP = {
    "diabetes": "metformin 500 MG Oral Tablet",
    "hypertension": "lisinopril 10 MG Oral Tablet",
    "copd": "tiotropium 18 MCG Inhalation Capsule",
    "asthma": "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
    "heart_failure": "furosemide 40 MG Oral Tablet",
    "ckd": "losartan 50 MG Oral Tablet",
    "depression": "sertraline 50 MG Oral Tablet",
    "atrial_fibrillation": "apixaban 5 MG Oral Tablet",
    "cad": "atorvastatin 40 MG Oral Tablet",
    "rheumatoid_arthritis": "methotrexate 2.5 MG Oral Tablet",
    "hypothyroidism": "levothyroxine 0.05 MG Oral Tablet",
    "breast_cancer": "anastrozole 1 MG Oral Tablet",
}
OTHER_DRUGS = ("aspirin 81 MG Oral Tablet", "amlodipine 5 MG Oral Tablet", "metoprolol succinate 25 MG Extended Release Oral Tablet",
               "omeprazole 20 MG Delayed Release Oral Capsule", "gabapentin 300 MG Oral Capsule", "vitamin D3 1000 UNT Oral Tablet",
               "simvastatin 20 MG Oral Tablet", "hydrochlorothiazide 25 MG Oral Tablet", "insulin glargine 100 UNT/ML Injectable Solution",
               "donepezil 10 MG Oral Tablet", "tamsulosin 0.4 MG Oral Capsule", "trazodone 50 MG Oral Tablet",
               "acetaminophen 500 MG Oral Tablet", "calcium carbonate 500 MG Oral Tablet", "carvedilol 6.25 MG Oral Tablet",
               "spironolactone 25 MG Oral Tablet", "pantoprazole 40 MG Delayed Release Oral Tablet", "fluticasone 50 MCG/ACTUAT Nasal Spray",
               "cetirizine 10 MG Oral Tablet", "montelukast 10 MG Oral Tablet", "duloxetine 30 MG Delayed Release Oral Capsule",
               "potassium chloride 20 MEQ Extended Release Oral Tablet", "allopurinol 100 MG Oral Tablet", "meloxicam 15 MG Oral Tablet",
               "empagliflozin 10 MG Oral Tablet")
STATIN = "atorvastatin 20 MG Oral Tablet"
NICOTINE_PATCH = "nicotine 21 MG/24HR Transdermal Patch"
# Active drugs per patient by latent state: (low, high inclusive).
DRUG_COUNT = ((0, 1), (0, 2), (1, 5), (6, 14), (7, 15))

# --- outcome sets: screenings, immunizations, care planning, falls, end of life -------------

# Services of the outcome sets (issue: outcome measures per subgroup), with the code each is
# recorded under: (key, code, code system, description). CPT and HCPCS as billed; vaccines by CDC
# CVX code (https://www2.cdc.gov/vaccines/iis/iisstandards/vaccines.asp?rpt=cvx).
PROCEDURES = (
    ("colonoscopy", "45378", "CPT", "Colonoscopy, flexible; diagnostic"),
    ("fit", "82274", "CPT", "Blood, occult, by fecal hemoglobin determination by immunoassay (FIT)"),
    ("mammography", "77067", "CPT", "Screening mammography, bilateral, including CAD"),
    ("cervical_cytology", "88175", "CPT", "Cytopathology, cervical or vaginal, automated thin layer preparation"),
    ("flu_vaccine", "150", "CVX", "Influenza, injectable, quadrivalent, preservative free"),
    ("pneumococcal_vaccine", "216", "CVX", "Pneumococcal conjugate PCV20, polysaccharide CRM197 conjugate"),
    ("tobacco_counselling", "99406", "CPT", "Smoking and tobacco use cessation counseling visit; 3-10 minutes"),
    ("care_plan", "G0506", "HCPCS", "Comprehensive assessment of and care planning for chronic care management"),
    ("advance_care_planning", "99497", "CPT", "Advance care planning, first 30 minutes"),
    ("hospice", "Q5001", "HCPCS", "Hospice care provided in patient's home/residence"),
)
# Share of eligible patients up to date (US adult rates of the order of NHIS 2021 / CDC FluVaxView
# 2022-23: colorectal ~70 %, mammography ~75 %, cervical ~73 %, influenza 45 % under 65 and 70 %
# from 65, pneumococcal ~65 % from 65), before the team factor below.
SCREENING_UP_TO_DATE = {"colorectal": 0.68, "mammography": 0.72, "cervical": 0.70}
FLU_SHARE = (0.42, 0.70)  # under 65, 65 and over, per season
PNEUMOCOCCAL_SHARE = 0.65
TOBACCO_COUNSELLED_SHARE = 0.5
CARE_PLAN_SHARE = {"complex": 0.55, "frail": 0.65}
ADVANCE_CARE_PLANNING_SHARE = {"complex": 0.25, "frail": 0.55}
STATIN_DIABETES_SHARE = 0.62  # diabetics aged 40-75 on a statin (NHANES: ~60 %)
# Team factor on prevention and care planning (TEAMS order): the prevention team does best,
# the Hillcrest teams less well.
TEAM_PREVENTION = (1.0, 1.12, 1.05, 1.0, 1.05, 0.86, 0.8)
# Falls with injury per person-year among frail patients (CDC STEADI: about a quarter of older
# adults fall each year, ~37 % of falls need treatment); by team.
FALLS_WITH_INJURY_PER_YEAR = 0.16
TEAM_FALLS = (1.0, 1.0, 1.0, 1.0, 0.8, 1.0, 1.3)
FALL_CODE = ("W19.XXXA", "Unspecified fall, initial encounter")
FALL_INJURIES = (
    ("S72.001A", "Fracture of unspecified part of neck of right femur, initial encounter", 0.2),
    ("S52.501A", "Unspecified fracture of the lower end of right radius, initial encounter", 0.25),
    ("S01.01XA", "Laceration without foreign body of scalp, initial encounter", 0.3),
    ("S80.01XA", "Contusion of right knee, initial encounter", 0.25),
)
# End of life: decedents admitted to die in hospital (about a third of US deaths, CDC WONDER
# place of death 2021), and hospice among the others (NHPCO: ~48 % of Medicare decedents).
TERMINAL_ADMISSION_SHARE = 0.33
HOSPICE_SHARE = 0.5
# Discharge disposition of admissions not followed by a skilled-nursing stay (home vs home health).
HOME_HEALTH_SHARE = 0.15
