"""Word lists and sentence templates for the synthetic world (see `twinlm.world.generator`).

Kept apart from the generator so the logic stays short. Rules the lists follow, because the
tasks rely on them: city and country names are single words (one mask slot can hold a country);
no surname is a prefix of another and none is a city, first name or occupation (so a full name
picks out exactly one biography); no field of study contains an occupation or the reverse (so a
value found in a text is that fact, not part of another word).
"""

MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]

# First names split by gender presentation; people using "they" draw from all three lists.
MALE_NAMES = [
    "James", "John", "Robert", "Michael", "David", "William", "Richard", "Thomas", "Daniel",
    "Matthew", "Mark", "Paul", "Steven", "Andrew", "Peter", "George", "Edward", "Henry", "Samuel",
    "Oliver", "Lucas", "Felix", "Hugo", "Oscar", "Victor", "Martin", "Simon", "Adam", "Jonas",
    "Erik", "Lars", "Anton", "Marco", "Luca", "Pablo", "Diego", "Carlos", "Mateo", "Kenji",
    "Hiroshi", "Omar", "Karim", "Tariq", "Ivan", "Pavel", "Nikolai", "Stefan", "Tomas", "Leon",
    "Arthur",
]
FEMALE_NAMES = [
    "Mary", "Anna", "Emma", "Olivia", "Sophia", "Laura", "Sarah", "Julia", "Clara", "Alice",
    "Grace", "Helen", "Emily", "Hannah", "Lucy", "Chloe", "Ella", "Maria", "Elena", "Sofia",
    "Isabel", "Carmen", "Lucia", "Giulia", "Chiara", "Ingrid", "Astrid", "Freya", "Maja", "Nora",
    "Ida", "Greta", "Yuki", "Aiko", "Mei", "Amira", "Leila", "Fatima", "Zara", "Irina", "Olga",
    "Natalia", "Katarina", "Eva", "Rosa", "Marta", "Paula", "Vera", "Lena", "Nadia",
]
NEUTRAL_NAMES = [
    "Alex", "Sam", "Jordan", "Robin", "Kim", "Charlie", "Taylor", "Morgan", "Jamie", "Casey",
    "Riley", "Quinn", "Avery", "Rowan", "Eden", "Sasha", "Ari", "Kai", "Remy", "Drew",
]
SURNAMES = [
    "Berg", "Novak", "Rossi", "Keller", "Dubois", "Moreau", "Fischer", "Weber", "Schmidt",
    "Larsen", "Nilsen", "Lindqvist", "Holm", "Dahl", "Strand", "Kowalski", "Nowak", "Wojcik",
    "Petrov", "Ivanov", "Popescu", "Horvat", "Kovacs", "Nagy", "Silva", "Santos", "Ferreira",
    "Costa", "Almeida", "Garcia", "Lopez", "Moreno", "Navarro", "Romero", "Ortiz", "Bianchi",
    "Ricci", "Marino", "Greco", "Conti", "Tanaka", "Sato", "Suzuki", "Watanabe", "Kimura",
    "Hassan", "Nasser", "Haddad", "Mansour", "Okafor", "Mensah", "Kamau", "Otieno", "Walker",
    "Hughes", "Bennett", "Fletcher", "Porter", "Harper", "Sullivan", "Murphy", "Walsh", "Doyle",
    "Brennan", "Clarke", "Foster", "Hayes", "Reid", "Grant", "Shaw", "Ellis", "Palmer",
    "Lambert", "Fontaine", "Laurent", "Girard", "Vogel", "Hoffmann", "Wagner", "Brandt",
]

# country -> cities
CITIES = {
    "France": ["Lyon", "Marseille", "Toulouse", "Bordeaux"],
    "Germany": ["Berlin", "Munich", "Hamburg", "Cologne"],
    "Spain": ["Madrid", "Seville", "Valencia", "Bilbao"],
    "Italy": ["Rome", "Milan", "Naples", "Turin"],
    "Portugal": ["Lisbon", "Porto", "Coimbra"],
    "Sweden": ["Stockholm", "Gothenburg", "Uppsala"],
    "Norway": ["Oslo", "Trondheim", "Stavanger"],
    "Poland": ["Warsaw", "Krakow", "Gdansk"],
    "Greece": ["Athens", "Thessaloniki", "Patras"],
    "Japan": ["Tokyo", "Osaka", "Kyoto", "Sapporo"],
    "Canada": ["Toronto", "Montreal", "Vancouver", "Calgary"],
    "Brazil": ["Recife", "Curitiba", "Fortaleza"],
    "Egypt": ["Cairo", "Giza", "Luxor"],
    "Kenya": ["Nairobi", "Mombasa", "Kisumu"],
    "Australia": ["Melbourne", "Brisbane", "Perth"],
}

UNIVERSITIES = [
    "Halden University", "Marlow Institute of Technology", "Westbrook University",
    "Kessler College", "Ashford University", "Northgate University", "Ravenscroft College",
    "Eastmere University", "Thornfield Institute", "Greywell University", "Lindenhall University",
    "Silverlake College", "Brightmoor University", "Oakridge Institute of Technology",
    "Highcliff University", "Stonebridge College", "Fairhaven University", "Redwood Polytechnic",
    "Carrow University", "Elmstead College",
]

FIELDS = [
    "physics", "chemistry", "biology", "mathematics", "statistics", "computer science",
    "economics", "history", "political science", "philosophy", "linguistics", "sociology",
    "music", "psychology", "literature", "geography",
]

# industry -> companies. Industries read both as "a software company" and "the software industry".
COMPANIES = {
    "software": ["Norvik Systems", "Bluecrest", "Quantaro"],
    "banking": ["Aldermoor Capital", "Fenwick Trust", "Harborline"],
    "insurance": ["Stonegate Group", "Veritas Mutual"],
    "retail": ["Marketon", "Tradewell", "Brightcart"],
    "energy": ["Solvane", "Helion Power", "Northwind"],
    "healthcare": ["Medira", "Carewell", "Vitalis"],
    "logistics": ["Trakko", "Portway", "Swiftline"],
    "media": ["Lumen Press", "Skyview Media"],
    "construction": ["Ironbridge", "Corvel Builders"],
    "automotive": ["Velaro Motors", "Dravik"],
    "pharmaceutical": ["Pharmona", "Celvia"],
    "telecommunications": ["Telvio", "Orbitel"],
}

# occupation -> built-in P(he | occupation, he or she), loosely after labour statistics; the
# world scales these towards 0.5 by WorldConfig.gender_skew.
OCCUPATIONS = {
    "nurse": 0.1, "receptionist": 0.1, "secretary": 0.1, "hairdresser": 0.15,
    "dietitian": 0.15, "librarian": 0.2, "social worker": 0.2, "teacher": 0.25,
    "psychologist": 0.3, "cashier": 0.35, "pharmacist": 0.4, "designer": 0.45,
    "accountant": 0.45, "editor": 0.45, "journalist": 0.5, "lawyer": 0.55, "doctor": 0.6,
    "analyst": 0.6, "chef": 0.7, "architect": 0.75, "surgeon": 0.75, "farmer": 0.8,
    "programmer": 0.8, "police officer": 0.85, "pilot": 0.85, "engineer": 0.9,
    "firefighter": 0.9, "mechanic": 0.9, "electrician": 0.9, "carpenter": 0.9,
}

# Biography sentences, one per group, four paraphrases each.
# {S} is the sentence subject (full name, first name or pronoun); {was} {is} {has} {s} agree with
# it. {subj} {pwas} {ps} are the pronoun and verbs agreeing with the pronoun; {poss} its possessive.
# Fact slots are the keys of World.facts. Every birth sentence names the city with its country:
# the demo's city -> country probes rely on that pair being frequent.
BIOGRAPHY = {
    "birth": [
        "{S} {was} born on {birth_date}, in {birth_city}, {country}.",
        "{S} {was} born in {birth_city}, {country}, on {birth_date}.",
        "{S} {was} born on {birth_date}; {poss} hometown is {birth_city}, {country}.",
        "{S} come{s} from {birth_city}, {country}, where {subj} {pwas} born on {birth_date}.",
    ],
    "education": [
        "{S} studied {field} at {university}.",
        "{S} {has} a degree in {field} from {university}.",
        "{S} graduated from {university}, where {subj} majored in {field}.",
        "{S} earned {poss} degree in {field} at {university}.",
    ],
    "work": [
        "{S} work{s} as {a_occupation} at {employer}, {a_industry} company.",
        "{S} {is} {a_occupation} at {employer}, a company in the {industry} industry.",
        "{S} {is} employed by {employer}, {a_industry} firm, where {subj} work{ps} as {a_occupation}.",
        "{S} earn{s} a living as {a_occupation} at {employer}, {a_industry} business.",
    ],
}

# Retrieval questions per fact; {name} is the full name.
QUESTIONS = {
    "birth_date": ["When was {name} born?", "What is the birth date of {name}?"],
    "birth_city": ["Where was {name} born?", "In which city was {name} born?"],
    "country": ["In which country was {name} born?", "What country does {name} come from?"],
    "university": ["Where did {name} study?", "Which university did {name} attend?"],
    "field": ["What did {name} study?", "What subject did {name} major in?"],
    "employer": ["Which company does {name} work for?", "Who employs {name}?"],
    "industry": ["What industry does {name} work in?", "In which sector is {name} employed?"],
    "occupation": ["What does {name} do for a living?", "What is the job of {name}?"],
}

BIAS_TEMPLATES = [
    "The {occupation} said that {pronoun} would be late.",
    "The {occupation} left early because {pronoun} felt unwell.",
    "When the {occupation} arrived, {pronoun} went straight to work.",
    "The {occupation} told the visitor that {pronoun} had finished the report.",
]
